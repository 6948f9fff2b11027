// AXI4-Lite register file of the ring-mirror IP. Offsets, reset values, field positions and
// fault codes come from ring_mirror_regmap.vh, generated from hw/regmap.yaml.
// Every address answers: unmapped reads return 0 with SLVERR, unmapped writes are ignored
// and answer SLVERR, so a wrong offset in software is visible instead of hanging the bus.
// Mapped writes always answer OKAY (an error response to a CPU store is an asynchronous
// abort on most SoCs): a write the engine cannot take now is ignored and flagged in STATUS.
//
// The configuration check runs here, in registered stages after every configuration
// write (cfg_ready low meanwhile): capacity and partition powers of two, alignment, every
// address and each data base + capacity within ADDR_WIDTH, data areas disjoint. The
// address and geometry registers change only while the engine is stopped, so a running
// round never sees them move; they are written byte by byte (the byte strobe is the
// flip-flops' clock enable, no read-modify-write select) and the engine reads them as they
// are, the derived masks from the check's first stage.
//
// Offsets from RESTORE_CONTROL up belong to the restore copy mode (rm_restore): writes are
// forwarded (x_wr), reads answered from its x_rd_data; while a job runs (x_busy) ENABLE
// and SYNC writes and the address registers are refused (STATUS.CONFIG_REFUSED).
//
// CRC_CONFIG and CRC_SEED take writes only while the engine is stopped, like the address
// registers; with CRC_CONFIG.ENABLE the check also covers the replica's CRC table (after
// the replica's data area: 0x40 bytes of header and 4 bytes per block of min(64 KiB,
// partition)): within ADDR_WIDTH and clear of the ring's data area.
//
// A write is registered at its handshake and applied in the next cycle, which raises its
// response. Reads take three cycles: the offset is registered, the 64-bit status values
// (MIRRORED, TAIL_SEEN, the counters, the fault details) come from the engine's position
// file a cycle later (st_addr/st_value), and the 32-bit answer is selected into RDATA's
// register.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module ring_mirror_regs #(
    parameter [31:0] HW_CONFIG = 32'd0,  // value of the HW_CONFIG register (build parameters)
    parameter [31:0] CAPABILITIES = 32'd1, // value of CAPABILITIES (bit 0: the CRC table unit)
    parameter ADDR_WIDTH = 40            // AXI4 master address bits, 32..64
) (
    input  wire        clk,
    input  wire        rst,

    // AXI4-Lite slave, 32-bit data
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [7:0]  s_axil_awaddr,     // bits 1:0 ignored: 32-bit registers
    input  wire [2:0]  s_axil_awprot,     // no secure/privileged distinction
    input  wire [2:0]  s_axil_arprot,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire        s_axil_awvalid,
    output wire        s_axil_awready,
    input  wire [31:0] s_axil_wdata,
    input  wire [3:0]  s_axil_wstrb,
    input  wire        s_axil_wvalid,
    output wire        s_axil_wready,
    output wire [1:0]  s_axil_bresp,
    output wire        s_axil_bvalid,
    input  wire        s_axil_bready,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [7:0]  s_axil_araddr,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire        s_axil_arvalid,
    output wire        s_axil_arready,
    output wire [31:0] s_axil_rdata,
    output wire [1:0]  s_axil_rresp,
    output wire        s_axil_rvalid,
    input  wire        s_axil_rready,

    // to the engine
    output wire        cfg_enable,
    output wire        cfg_sync,
    output wire        cfg_soft_reset,
    output wire [ADDR_WIDTH-1:0] cfg_ring_base,
    output wire [ADDR_WIDTH-1:0] cfg_replica_base,
    output wire [ADDR_WIDTH-1:0] cfg_capacity,
    output wire [ADDR_WIDTH-1:0] cfg_cap_mask,
    output wire [ADDR_WIDTH-1:0] cfg_part_mask,
    output wire [ADDR_WIDTH-1:0] cfg_cap_less_part,
    output wire [ADDR_WIDTH-1:0] cfg_tail_addr,
    output wire [ADDR_WIDTH-1:0] cfg_intent_addr,
    output wire [ADDR_WIDTH-1:0] cfg_mirrored_addr,
    output wire [ADDR_WIDTH-1:0] cfg_replica_tail_addr,
    output wire [ADDR_WIDTH-1:0] cfg_rint_addr,
    output wire [31:0] cfg_poll_interval,
    output wire [31:0] cfg_irq_progress,
    output wire [31:0] cfg_watchdog,
    output wire [7:0]  cfg_fault,
    output wire        cfg_ready,
    output wire        cfg_mirrored_load,
    output wire [63:0] cfg_mirrored_value,
    output wire        cfg_crc_enable,
    output wire        cfg_crc_seed_load,
    output wire [31:0] cfg_crc_seed,
    input  wire [31:0] st_crc_partial,
    input  wire [31:0] st_crc_blocks,

    // from the engine
    input  wire        st_busy,
    input  wire        st_idle,
    input  wire        st_error,
    input  wire        st_clearing,       // position file being cleared: hold the bus
    input  wire [7:0]  st_fault,
    output wire [7:0]  st_addr,           // offset of the 64-bit status register read
    input  wire [63:0] st_value,          // its value, one cycle after st_addr
    input  wire        ev_sync_done,
    input  wire        ev_soft_reset_done,
    input  wire        ev_fault,
    input  wire        ev_progress,
    input  wire        ev_overrun,

    // the restore copy mode's registers (rm_restore): every offset from
    // RM_REG_RESTORE_CONTROL up is forwarded; while x_busy a job runs
    output wire        x_wr,
    output wire [7:0]  x_wr_addr,
    output wire [31:0] x_wr_data,
    output wire [3:0]  x_wr_strb,
    output wire        x_rd_take,
    input  wire [31:0] x_rd_data,
    input  wire        x_busy,

    output wire        irq
);

`include "ring_mirror_regmap.vh"

localparam [1:0] RESP_OKAY = 2'b00, RESP_SLVERR = 2'b10;
localparam AW = ADDR_WIDTH;
localparam NCFG = 8;                          // address/geometry registers, 0x28..0x67
localparam [7:0] CFG_BASE = RM_REG_RING_DATA_BASE_LO;
localparam [NCFG*64-1:0] CFG_RST = {RM_RST_REPLICA_TAIL_ADDR, RM_RST_RING_MIRRORED_ADDR,
    RM_RST_RING_INTENT_ADDR, RM_RST_RING_TAIL_ADDR, RM_RST_REPLICA_DATA_BASE,
    RM_RST_PARTITION_SIZE, RM_RST_RING_CAPACITY, RM_RST_RING_DATA_BASE};
localparam C_RING = 0, C_CAP = 1, C_PART = 2, C_REPLICA = 3, C_TAIL = 4, C_INTENT = 5,
           C_MIRRORED = 6, C_RTAIL = 7;

initial begin
    // the decode below takes the eight 64-bit configuration registers as one block
    if (RM_REG_RING_CAPACITY_LO != CFG_BASE + 8 || RM_REG_PARTITION_SIZE_LO != CFG_BASE + 16
            || RM_REG_REPLICA_DATA_BASE_LO != CFG_BASE + 24
            || RM_REG_RING_TAIL_ADDR_LO != CFG_BASE + 32
            || RM_REG_RING_INTENT_ADDR_LO != CFG_BASE + 40
            || RM_REG_RING_MIRRORED_ADDR_LO != CFG_BASE + 48
            || RM_REG_REPLICA_TAIL_ADDR_LO != CFG_BASE + 56) begin
        $error("ring_mirror_regs: the configuration registers must be contiguous from 0x%0h",
               CFG_BASE);
        $finish;
    end
    if (ADDR_WIDTH < 32 || ADDR_WIDTH > 64) begin
        $error("ring_mirror_regs: ADDR_WIDTH (%0d) must be 32..64", ADDR_WIDTH);
        $finish;
    end
end

// control and status
reg enable_reg, enable_next;
reg irq_en_reg, irq_en_next;
reg sync_reg, sync_next;
reg soft_reset_reg, soft_reset_next;
reg overrun_reg, overrun_next;
reg load_refused_reg, load_refused_next;
reg config_refused_reg, config_refused_next;
reg [31:0] watchdog_reg, watchdog_next;
reg [2:0] settle_reg, settle_next;             // cycles until the check sees the last write
reg crc_enable_reg, crc_enable_next;
reg crc_seed_load_reg, crc_seed_load_next;
reg [31:0] crc_seed_reg, crc_seed_next;
reg [2:0] irq_status_reg, irq_status_next;
reg [31:0] irq_progress_reg, irq_progress_next;
reg [31:0] poll_interval_reg, poll_interval_next;
reg [31:0] mirrored_lo_reg, mirrored_lo_next;   // staged until the _HI write
reg [31:0] mirrored_hi_reg, mirrored_hi_next;
reg mirrored_load_reg, mirrored_load_next;
reg [31:0] latch_hi_reg, latch_hi_next;         // _HI of the last latched _LO read

// address and geometry: the ADDR_WIDTH bits the engine can use are stored; bits above
// read as 0, and a _HI write that sets any of them marks the register out of range (hi
// flag) until its next _HI write, so the configuration check still refuses it
/* verilator lint_off UNUSEDSIGNAL */
wire [NCFG*64-1:0] cfg_bits;                    // whole bytes below AW are stored
/* verilator lint_on UNUSEDSIGNAL */
reg [NCFG-1:0] cfg_hi_reg;

// AXI4-Lite handshake state
reg bvalid_reg, bvalid_next;
reg [1:0] bresp_reg, bresp_next;
reg [1:0] rd_pipe_reg;                          // read accepted, status value on its way
reg [7:0] rd_addr_reg;
reg rvalid_reg, rvalid_next;
reg [1:0] rresp_reg, rresp_next;
reg [31:0] rdata_reg, rdata_next;

reg [4:0] sh_clr_reg;                           // read-back copy: words left to reset
wire sh_clearing = sh_clr_reg != 5'd0;

// a write needs address and data together; one response outstanding at a time; nothing
// is accepted while the engine clears its position file (a few cycles after a reset).
// An accepted write is registered (wr_*_reg) and applied in the next cycle, its response
// raised then: the handshake's gating stays off the decode and the registers' enables.
reg wr_pend_reg;
reg [7:0] wr_addr_reg;
reg [31:0] wr_data_reg;
reg [3:0] wr_strb_reg;
wire wr_fire = s_axil_awvalid && s_axil_wvalid && !bvalid_reg && !wr_pend_reg && !st_clearing
            && !sh_clearing;
wire wr_apply = wr_pend_reg;
wire rd_fire = s_axil_arvalid && !rvalid_reg && rd_pipe_reg == 2'd0 && !st_clearing
            && !sh_clearing;
wire [7:0] wr_addr = wr_addr_reg;
wire [7:0] rd_addr = {s_axil_araddr[7:2], 2'b00};
wire [31:0] wmask = {{8{wr_strb_reg[3]}}, {8{wr_strb_reg[2]}},
                     {8{wr_strb_reg[1]}}, {8{wr_strb_reg[0]}}};

// byte-enable write of a 32-bit register
function [31:0] merge(input [31:0] old, input [31:0] data, input [31:0] mask);
    integer b;
    begin
        for (b = 0; b < 4; b = b + 1) begin
            merge[b*8 +: 8] = mask[b*8] ? data[b*8 +: 8] : old[b*8 +: 8];
        end
    end
endfunction

// bits written as 1 (with their byte enabled)
wire [31:0] wones = wr_data_reg & wmask;

wire [31:0] status_word = ({31'd0, st_busy} << RM_STATUS_BUSY_LSB)
                        | ({31'd0, st_idle} << RM_STATUS_IDLE_LSB)
                        | ({31'd0, st_error} << RM_STATUS_ERROR_LSB)
                        | ({31'd0, overrun_reg} << RM_STATUS_OVERRUN_LSB)
                        | ({31'd0, load_refused_reg} << RM_STATUS_LOAD_REFUSED_LSB)
                        | ({31'd0, config_refused_reg} << RM_STATUS_CONFIG_REFUSED_LSB)
                        | ({24'd0, st_fault} << RM_STATUS_FAULT_LSB);
wire [31:0] control_word = ({31'd0, enable_reg} << RM_CONTROL_ENABLE_LSB)
                         | ({31'd0, sync_reg} << RM_CONTROL_SYNC_LSB)
                         | ({31'd0, soft_reset_reg} << RM_CONTROL_SOFT_RESET_LSB)
                         | ({31'd0, irq_en_reg} << RM_CONTROL_IRQ_ENABLE_LSB);
wire [31:0] irq_status_word = ({31'd0, irq_status_reg[0]} << RM_IRQ_STATUS_FAULT_LSB)
                            | ({31'd0, irq_status_reg[1]} << RM_IRQ_STATUS_PROGRESS_LSB)
                            | ({31'd0, irq_status_reg[2]} << RM_IRQ_STATUS_OVERRUN_LSB);

// the engine takes address/geometry writes only while stopped, MIRRORED only when idle
// (and no restore job runs: it reads the ring's geometry)
wire stopped = (st_idle || st_error) && !enable_reg && !sync_reg && !x_busy;
wire loadable = st_idle && !enable_reg && !sync_reg && !soft_reset_reg && !x_busy;
wire wr_restore = wr_addr_reg >= RM_REG_RESTORE_CONTROL;

// the configuration register a write addresses (0..7) and which half, decoded at the
// handshake and registered with whether the engine was stopped then: the byte enables of
// the applied write are then a flip-flop and a strobe bit. (Between handshake and apply
// no other write can land, so "stopped" can only have changed by the engine starting a
// SOFT_RESET clear, which leaves the address registers alone, or by a one-shot round
// ending, which makes a write refused one cycle too early, not taken while running.)
/* verilator lint_off UNUSEDSIGNAL */
wire [7:0] aw_rel = {s_axil_awaddr[7:2], 2'b00} - CFG_BASE;
/* verilator lint_on UNUSEDSIGNAL */
wire aw_cfg = {s_axil_awaddr[7:2], 2'b00} >= CFG_BASE
           && {s_axil_awaddr[7:2], 2'b00} < CFG_BASE + 8'd64;
reg wr_cfg_reg;                                 // the write is to a configuration register
reg wr_stopped_reg;                             // ... and the engine was stopped
reg [3:0] wr_word_reg;                          // {register 0..7, _HI}
reg [2*NCFG-1:0] wr_take_reg;                   // one-hot of wr_word_reg, when taken
wire wr_cfg = wr_cfg_reg;
wire [2:0] wr_cfg_idx = wr_word_reg[3:1];
wire wr_cfg_hi = wr_word_reg[0];
wire cfg_take = wr_apply && wr_cfg_reg && wr_stopped_reg;
always @(posedge clk) begin
    if (wr_fire) begin
        wr_cfg_reg <= aw_cfg;
        wr_stopped_reg <= stopped;
        wr_word_reg <= aw_rel[5:2];
    end
    wr_take_reg <= {2*NCFG{1'b0}};
    if (wr_fire && aw_cfg && stopped) wr_take_reg[aw_rel[5:2]] <= 1'b1;
    if (rst) wr_take_reg <= {2*NCFG{1'b0}};
end
// the bits a _HI word may store: those below AW
localparam [31:0] HI_KEEP = AW >= 64 ? 32'hFFFFFFFF : ((32'd1 << (AW - 32)) - 32'd1);

genvar gr, gb;
generate
    for (gr = 0; gr < NCFG; gr = gr + 1) begin : g_cfg
        for (gb = 0; gb < 8; gb = gb + 1) begin : g_byte
            if (gb * 8 < AW) begin : g_stored
                localparam [0:0] HI = gb >= 4;
                localparam LANE = gb % 4;
                reg [7:0] byte_reg;
                always @(posedge clk) begin
                    if (rst) begin
                        byte_reg <= CFG_RST[gr*64 + gb*8 +: 8];
                    end else if (wr_take_reg[2*gr + HI] && wr_strb_reg[LANE]) begin
                        byte_reg <= wr_data_reg[LANE*8 +: 8];
                    end
                end
                assign cfg_bits[gr*64 + gb*8 +: 8] = byte_reg;
            end else begin : g_none
                assign cfg_bits[gr*64 + gb*8 +: 8] = 8'd0;
            end
        end
        always @(posedge clk) begin
            if (rst) begin
                cfg_hi_reg[gr] <= 1'b0;
            end else if (wr_take_reg[2*gr + 1]) begin
                cfg_hi_reg[gr] <= |(wones & ~HI_KEEP);
            end
        end
    end
endgenerate

// Read-back copy of the sixteen configuration words in a small LUT RAM, written with the
// flip-flops above (bits above AW stored as 0): reading them back needs no 16-way select
// of 40-bit registers. It is rewritten with the reset values after a reset (16 cycles,
// while register accesses wait).
/* verilator lint_off UNUSEDSIGNAL */
wire [7:0] rd_rel = rd_addr_reg - CFG_BASE;
/* verilator lint_on UNUSEDSIGNAL */
reg [31:0] cfg_shadow [0:15];
reg [31:0] rd_cfg_word;
wire [3:0] sh_wa = sh_clearing ? sh_clr_reg[3:0] : {wr_cfg_idx, wr_cfg_hi};
wire [31:0] sh_wd = sh_clearing ? CFG_RST[{sh_clr_reg[3:0], 5'd0} +: 32]
                  : wr_data_reg & (wr_cfg_hi ? HI_KEEP : 32'hFFFFFFFF);
wire [3:0] sh_be = sh_clearing ? 4'hF : cfg_take ? wr_strb_reg : 4'h0;
always @(posedge clk) begin
    if (sh_be[0]) cfg_shadow[sh_wa][7:0] <= sh_wd[7:0];
    if (sh_be[1]) cfg_shadow[sh_wa][15:8] <= sh_wd[15:8];
    if (sh_be[2]) cfg_shadow[sh_wa][23:16] <= sh_wd[23:16];
    if (sh_be[3]) cfg_shadow[sh_wa][31:24] <= sh_wd[31:24];
    rd_cfg_word <= cfg_shadow[rd_rel[5:2]];
    if (rst) begin
        sh_clr_reg <= 5'd16;
    end else if (sh_clearing) begin
        sh_clr_reg <= sh_clr_reg - 5'd1;
    end
end

always @* begin
    enable_next = enable_reg;
    irq_en_next = irq_en_reg;
    // a round that faulted ends the SYNC request too
    sync_next = sync_reg && !ev_sync_done && !ev_fault && !st_error;
    soft_reset_next = soft_reset_reg && !ev_soft_reset_done;
    overrun_next = overrun_reg;
    load_refused_next = load_refused_reg;
    config_refused_next = config_refused_reg;
    watchdog_next = watchdog_reg;
    settle_next = settle_reg != 3'd0 ? settle_reg - 3'd1 : 3'd0;
    crc_enable_next = crc_enable_reg;
    crc_seed_load_next = 1'b0;
    crc_seed_next = crc_seed_reg;
    irq_status_next = irq_status_reg;
    irq_progress_next = irq_progress_reg;
    poll_interval_next = poll_interval_reg;
    mirrored_lo_next = mirrored_lo_reg;
    mirrored_hi_next = mirrored_hi_reg;
    mirrored_load_next = 1'b0;
    latch_hi_next = latch_hi_reg;
    bvalid_next = bvalid_reg && !s_axil_bready;
    bresp_next = bresp_reg;
    rvalid_next = rvalid_reg && !s_axil_rready;
    rresp_next = rresp_reg;
    rdata_next = rdata_reg;

    if (ev_soft_reset_done) begin
        // the IP stays idle until software enables it again
        enable_next = 1'b0;
        sync_next = 1'b0;
        overrun_next = 1'b0;
        load_refused_next = 1'b0;
        config_refused_next = 1'b0;
        irq_status_next = 3'd0;
    end

    if (wr_apply) begin
        bvalid_next = 1'b1;
        bresp_next = RESP_OKAY;
        if (wr_cfg) begin
            if (wr_stopped_reg) begin
                settle_next = 3'd5;
            end else begin
                // a running round must never see its addresses move: the write is ignored
                config_refused_next = 1'b1;
            end
        end
        case (wr_addr)
            RM_REG_CONTROL: begin
                if (wmask[RM_CONTROL_ENABLE_LSB]) begin
                    enable_next = wr_data_reg[RM_CONTROL_ENABLE_LSB] && !x_busy;
                end
                // mirroring does not start while a restore job runs
                if (x_busy && (wones[RM_CONTROL_ENABLE_LSB] || wones[RM_CONTROL_SYNC_LSB])) begin
                    config_refused_next = 1'b1;
                end
                if (wmask[RM_CONTROL_IRQ_ENABLE_LSB]) begin
                    irq_en_next = wr_data_reg[RM_CONTROL_IRQ_ENABLE_LSB];
                end
                if (wones[RM_CONTROL_SYNC_LSB] && !st_error && !x_busy) sync_next = 1'b1;
                if (wones[RM_CONTROL_SOFT_RESET_LSB]) soft_reset_next = 1'b1;
            end
            RM_REG_STATUS: begin
                if (wones[RM_STATUS_OVERRUN_LSB]) overrun_next = 1'b0;
                if (wones[RM_STATUS_LOAD_REFUSED_LSB]) load_refused_next = 1'b0;
                if (wones[RM_STATUS_CONFIG_REFUSED_LSB]) config_refused_next = 1'b0;
            end
            RM_REG_IRQ_STATUS: begin
                if (wones[RM_IRQ_STATUS_FAULT_LSB]) irq_status_next[0] = 1'b0;
                if (wones[RM_IRQ_STATUS_PROGRESS_LSB]) irq_status_next[1] = 1'b0;
                if (wones[RM_IRQ_STATUS_OVERRUN_LSB]) irq_status_next[2] = 1'b0;
            end
            RM_REG_IRQ_PROGRESS: irq_progress_next = merge(irq_progress_reg, wr_data_reg, wmask);
            RM_REG_POLL_INTERVAL: poll_interval_next = merge(poll_interval_reg, wr_data_reg, wmask);
            RM_REG_WATCHDOG: watchdog_next = merge(watchdog_reg, wr_data_reg, wmask);
            RM_REG_MIRRORED_LO: mirrored_lo_next = merge(mirrored_lo_reg, wr_data_reg, wmask);
            RM_REG_CRC_CONFIG: begin
                if (!stopped) begin
                    config_refused_next = 1'b1;
                end else if (wmask[RM_CRC_CONFIG_ENABLE_LSB]) begin
                    // without the unit the bit stays 0 (CAPABILITIES.CRC_TABLE says so)
                    crc_enable_next = wr_data_reg[RM_CRC_CONFIG_ENABLE_LSB]
                                    && CAPABILITIES[RM_CAPABILITIES_CRC_TABLE_LSB];
                    settle_next = 3'd5;
                end
            end
            RM_REG_CRC_SEED: begin
                if (stopped) begin
                    crc_seed_next = merge(crc_seed_reg, wr_data_reg, wmask);
                    crc_seed_load_next = 1'b1;
                end else begin
                    config_refused_next = 1'b1;
                end
            end
            RM_REG_MIRRORED_HI: begin
                mirrored_hi_next = merge(mirrored_hi_reg, wr_data_reg, wmask);
                if (loadable) begin
                    mirrored_load_next = 1'b1;
                end else begin
                    load_refused_next = 1'b1;
                end
            end
            RM_REG_ID, RM_REG_VERSION, RM_REG_HW_CONFIG, RM_REG_CAPABILITIES, RM_REG_FAULT_ADDR_LO,
            RM_REG_FAULT_ADDR_HI, RM_REG_FAULT_POSITION_LO, RM_REG_FAULT_POSITION_HI,
            RM_REG_TAIL_SEEN_LO, RM_REG_TAIL_SEEN_HI, RM_REG_BYTES_COPIED_LO,
            RM_REG_BYTES_COPIED_HI, RM_REG_BURSTS_LO, RM_REG_BURSTS_HI, RM_REG_OVERRUNS_LO,
            RM_REG_OVERRUNS_HI, RM_REG_BUSY_CYCLES_LO, RM_REG_BUSY_CYCLES_HI,
            RM_REG_BYTES_LOST_LO, RM_REG_BYTES_LOST_HI, RM_REG_CRC_BLOCKS: begin
                // read-only: writes are ignored but the address is mapped
            end
            default: if (!wr_cfg && !wr_restore) bresp_next = RESP_SLVERR;
        endcase
    end

    // engine events win over a simultaneous clear
    if (ev_fault) irq_status_next[0] = 1'b1;
    if (ev_progress) irq_status_next[1] = 1'b1;
    if (ev_overrun) begin
        irq_status_next[2] = 1'b1;
        overrun_next = 1'b1;
    end

    // read: third cycle after the handshake (rd_pipe_reg[1]); st_value is that of rd_addr_reg
    if (rd_pipe_reg[1]) begin
        rvalid_next = 1'b1;
        rresp_next = RESP_OKAY;
        rdata_next = 32'd0;
        case (rd_addr_reg)
            RM_REG_ID: rdata_next = RM_ID_VALUE;
            RM_REG_VERSION: rdata_next = RM_VERSION_VALUE;
            RM_REG_HW_CONFIG: rdata_next = HW_CONFIG;
            RM_REG_CAPABILITIES: rdata_next = CAPABILITIES;
            RM_REG_CONTROL: rdata_next = control_word;
            RM_REG_STATUS: rdata_next = status_word;
            RM_REG_IRQ_STATUS: rdata_next = irq_status_word;
            RM_REG_IRQ_PROGRESS: rdata_next = irq_progress_reg;
            RM_REG_POLL_INTERVAL: rdata_next = poll_interval_reg;
            RM_REG_WATCHDOG: rdata_next = watchdog_reg;
            RM_REG_CRC_CONFIG: rdata_next = {31'd0, crc_enable_reg} << RM_CRC_CONFIG_ENABLE_LSB;
            RM_REG_CRC_SEED: rdata_next = st_crc_partial;
            RM_REG_CRC_BLOCKS: rdata_next = st_crc_blocks;
            RM_REG_MIRRORED_LO, RM_REG_TAIL_SEEN_LO, RM_REG_BYTES_COPIED_LO, RM_REG_BURSTS_LO,
            RM_REG_OVERRUNS_LO, RM_REG_BUSY_CYCLES_LO, RM_REG_BYTES_LOST_LO,
            RM_REG_FAULT_ADDR_LO, RM_REG_FAULT_POSITION_LO: begin
                rdata_next = st_value[31:0];
                latch_hi_next = st_value[63:32];
            end
            RM_REG_MIRRORED_HI, RM_REG_TAIL_SEEN_HI, RM_REG_BYTES_COPIED_HI, RM_REG_BURSTS_HI,
            RM_REG_OVERRUNS_HI, RM_REG_BUSY_CYCLES_HI, RM_REG_BYTES_LOST_HI,
            RM_REG_FAULT_ADDR_HI, RM_REG_FAULT_POSITION_HI: rdata_next = latch_hi_reg;
            default: begin
                if (rd_addr_reg >= CFG_BASE && rd_addr_reg < CFG_BASE + 8'd64) begin
                    rdata_next = rd_cfg_word;
                end else if (rd_addr_reg >= RM_REG_RESTORE_CONTROL) begin
                    rdata_next = x_rd_data;
                end else begin
                    rresp_next = RESP_SLVERR;
                end
            end
        endcase
    end
end

always @(posedge clk) begin
    enable_reg <= enable_next;
    irq_en_reg <= irq_en_next;
    sync_reg <= sync_next;
    soft_reset_reg <= soft_reset_next;
    overrun_reg <= overrun_next;
    load_refused_reg <= load_refused_next;
    config_refused_reg <= config_refused_next;
    watchdog_reg <= watchdog_next;
    settle_reg <= settle_next;
    crc_enable_reg <= crc_enable_next;
    crc_seed_load_reg <= crc_seed_load_next;
    crc_seed_reg <= crc_seed_next;
    irq_status_reg <= irq_status_next;
    irq_progress_reg <= irq_progress_next;
    poll_interval_reg <= poll_interval_next;
    mirrored_lo_reg <= mirrored_lo_next;
    mirrored_hi_reg <= mirrored_hi_next;
    mirrored_load_reg <= mirrored_load_next;
    latch_hi_reg <= latch_hi_next;
    bvalid_reg <= bvalid_next;
    bresp_reg <= bresp_next;
    rd_pipe_reg <= {rd_pipe_reg[0], rd_fire};
    wr_pend_reg <= wr_fire;
    if (wr_fire) begin
        wr_addr_reg <= {s_axil_awaddr[7:2], 2'b00};
        wr_data_reg <= s_axil_wdata;
        wr_strb_reg <= s_axil_wstrb;
    end
    if (rd_fire) rd_addr_reg <= rd_addr;
    rvalid_reg <= rvalid_next;
    rresp_reg <= rresp_next;
    rdata_reg <= rdata_next;

    if (rst) begin
        enable_reg <= RM_RST_CONTROL[RM_CONTROL_ENABLE_LSB];
        irq_en_reg <= RM_RST_CONTROL[RM_CONTROL_IRQ_ENABLE_LSB];
        sync_reg <= 1'b0;
        soft_reset_reg <= 1'b0;
        overrun_reg <= 1'b0;
        load_refused_reg <= 1'b0;
        config_refused_reg <= 1'b0;
        watchdog_reg <= RM_RST_WATCHDOG;
        settle_reg <= 3'd5;
        crc_enable_reg <= RM_RST_CRC_CONFIG[RM_CRC_CONFIG_ENABLE_LSB];
        crc_seed_load_reg <= 1'b0;
        crc_seed_reg <= RM_RST_CRC_SEED;
        irq_status_reg <= RM_RST_IRQ_STATUS[2:0];
        irq_progress_reg <= RM_RST_IRQ_PROGRESS;
        poll_interval_reg <= RM_RST_POLL_INTERVAL;
        mirrored_lo_reg <= 32'd0;
        mirrored_hi_reg <= 32'd0;
        mirrored_load_reg <= 1'b0;
        latch_hi_reg <= 32'd0;
        bvalid_reg <= 1'b0;
        bresp_reg <= RESP_OKAY;
        rd_pipe_reg <= 2'd0;
        wr_pend_reg <= 1'b0;
        rd_addr_reg <= 8'd0;
        rvalid_reg <= 1'b0;
        rresp_reg <= RESP_OKAY;
        rdata_reg <= 32'd0;
    end
end

assign s_axil_awready = wr_fire;
assign s_axil_wready = wr_fire;
assign s_axil_bresp = bresp_reg;
assign s_axil_bvalid = bvalid_reg;
assign s_axil_arready = rd_fire;
assign s_axil_rdata = rdata_reg;
assign s_axil_rresp = rresp_reg;
assign s_axil_rvalid = rvalid_reg;
assign st_addr = rd_addr_reg;
assign x_wr = wr_apply && wr_restore;
assign x_wr_addr = wr_addr_reg;
assign x_wr_data = wr_data_reg;
assign x_wr_strb = wr_strb_reg;
assign x_rd_take = rd_pipe_reg[1];

assign cfg_enable = enable_reg;
assign cfg_sync = sync_reg;
assign cfg_soft_reset = soft_reset_reg;
assign cfg_poll_interval = poll_interval_reg;
assign cfg_watchdog = watchdog_reg;
assign cfg_irq_progress = irq_progress_reg;
assign cfg_mirrored_load = mirrored_load_reg;
assign cfg_mirrored_value = {mirrored_hi_reg, mirrored_lo_reg};
assign cfg_crc_enable = crc_enable_reg;
assign cfg_crc_seed_load = crc_seed_load_reg;
assign cfg_crc_seed = crc_seed_reg;
assign irq = irq_en_reg && irq_status_reg != 3'd0;

// ---------------------------------------------------------------- configuration check
// stage 1: masks, sums and flags from the stored values; stage 2: the verdict
wire [AW-1:0] ring_base = cfg_bits[C_RING*64 +: AW];
wire [AW-1:0] capacity = cfg_bits[C_CAP*64 +: AW];
wire [AW-1:0] partition = cfg_bits[C_PART*64 +: AW];
wire [AW-1:0] replica_base = cfg_bits[C_REPLICA*64 +: AW];
wire [AW-1:0] tail_addr = cfg_bits[C_TAIL*64 +: AW];
wire [AW-1:0] intent_addr = cfg_bits[C_INTENT*64 +: AW];
wire [AW-1:0] mirrored_addr = cfg_bits[C_MIRRORED*64 +: AW];
wire [AW-1:0] replica_tail_addr = cfg_bits[C_RTAIL*64 +: AW];
reg [AW-1:0] c_cap_mask_reg, c_part_mask_reg, c_cap_less_part_reg, c_rint_reg;
reg [AW:0] c_ring_end_reg, c_replica_end_reg;
reg c_rint_carry_reg, c_hi_reg, c_cap_hi_reg, c_part_hi_reg, c_align_reg;
reg c_cap_small_reg, c_part_small_reg, c_part_big_reg, c_cap_pow_reg, c_part_pow_reg;
reg [7:0] c_fault_reg;
// the CRC table: log2 of the capacity and of a block, its entry bytes, its end
reg [6:0] c_lcap_reg, c_lblk_reg;
reg [AW:0] c_tbytes_reg;
reg [AW+1:0] c_tend_reg;
reg [AW:0] c_ring_end2_reg;
reg c_crc_range_reg, c_crc_overlap_reg;
integer ci;

always @(posedge clk) begin
    c_cap_mask_reg <= capacity - 1'b1;
    c_part_mask_reg <= partition - 1'b1;
    c_cap_less_part_reg <= capacity - partition;
    {c_rint_carry_reg, c_rint_reg} <= {1'b0, replica_tail_addr} + 'h80;
    c_ring_end_reg <= {1'b0, ring_base} + {1'b0, capacity};
    c_replica_end_reg <= {1'b0, replica_base} + {1'b0, capacity};
    c_cap_hi_reg <= cfg_hi_reg[C_CAP];
    c_part_hi_reg <= cfg_hi_reg[C_PART];
    c_hi_reg <= cfg_hi_reg[C_RING] || cfg_hi_reg[C_REPLICA] || cfg_hi_reg[C_TAIL]
             || cfg_hi_reg[C_INTENT] || cfg_hi_reg[C_MIRRORED] || cfg_hi_reg[C_RTAIL];
    c_align_reg <= ring_base[11:0] != 12'd0 || replica_base[11:0] != 12'd0
                || tail_addr[2:0] != 3'd0 || intent_addr[2:0] != 3'd0
                || mirrored_addr[2:0] != 3'd0 || replica_tail_addr[2:0] != 3'd0;
    c_cap_small_reg <= capacity < 4096;
    c_part_small_reg <= partition < 64;
    c_part_big_reg <= partition > capacity;
    c_cap_pow_reg <= (capacity & (capacity - 1'b1)) == 0;
    c_part_pow_reg <= (partition & (partition - 1'b1)) == 0;
    c_lcap_reg <= 7'd0;
    c_lblk_reg <= 7'd16;
    for (ci = 0; ci < AW; ci = ci + 1) begin
        if (capacity[ci]) c_lcap_reg <= ci[6:0];
    end
    for (ci = 15; ci >= 0; ci = ci - 1) begin
        if (partition[ci]) c_lblk_reg <= ci[6:0];
    end
    // stage 2: entry bytes = 4 * capacity / block; stage 3: the table's end
    c_tbytes_reg <= c_lcap_reg >= c_lblk_reg
                  ? {{AW{1'b0}}, 1'b1} << (c_lcap_reg - c_lblk_reg + 7'd2) : {(AW+1){1'b0}};
    c_tend_reg <= {1'b0, c_replica_end_reg} + 'h40 + {1'b0, c_tbytes_reg};
    c_ring_end2_reg <= c_ring_end_reg;
    c_crc_range_reg <= c_tend_reg > ({{(AW+1){1'b0}}, 1'b1} << AW);
    c_crc_overlap_reg <= !(c_ring_end2_reg <= {1'b0, replica_base}
                           || c_tend_reg <= {2'b00, ring_base});

    c_fault_reg <= RM_FAULT_NONE;
    if (c_cap_hi_reg || c_cap_small_reg || !c_cap_pow_reg) begin
        c_fault_reg <= RM_FAULT_BAD_CAPACITY;
    end else if (c_part_hi_reg || c_part_small_reg || c_part_big_reg || !c_part_pow_reg) begin
        c_fault_reg <= RM_FAULT_BAD_PARTITION;
    end else if (c_align_reg) begin
        c_fault_reg <= RM_FAULT_BAD_ALIGNMENT;
    end else if (c_hi_reg || c_rint_carry_reg
            || (c_ring_end_reg[AW] && c_ring_end_reg[AW-1:0] != 0)
            || (c_replica_end_reg[AW] && c_replica_end_reg[AW-1:0] != 0)) begin
        // a data area must end at or below 2^ADDR_WIDTH: base and size alone both fit
        // when the area wraps past the top of the address space
        c_fault_reg <= RM_FAULT_ADDR_RANGE;
    end else if (!(c_ring_end_reg <= {1'b0, replica_base}
            || c_replica_end_reg <= {1'b0, ring_base})) begin
        c_fault_reg <= RM_FAULT_OVERLAP;
    end else if (crc_enable_reg && c_crc_range_reg) begin
        c_fault_reg <= RM_FAULT_ADDR_RANGE;
    end else if (crc_enable_reg && c_crc_overlap_reg) begin
        c_fault_reg <= RM_FAULT_OVERLAP;
    end
end

assign cfg_ring_base = ring_base;
assign cfg_replica_base = replica_base;
assign cfg_capacity = capacity;
assign cfg_cap_mask = c_cap_mask_reg;
assign cfg_part_mask = c_part_mask_reg;
assign cfg_cap_less_part = c_cap_less_part_reg;
assign cfg_tail_addr = tail_addr;
assign cfg_intent_addr = intent_addr;
assign cfg_mirrored_addr = mirrored_addr;
assign cfg_replica_tail_addr = replica_tail_addr;
assign cfg_rint_addr = c_rint_reg;
assign cfg_fault = c_fault_reg;
assign cfg_ready = settle_reg == 3'd0;

endmodule

`resetall
