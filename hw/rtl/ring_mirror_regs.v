// AXI4-Lite register file of the ring-mirror IP. Offsets, reset values, field positions and
// fault codes come from ring_mirror_regmap.vh, generated from hw/regmap.yaml.
// Every address answers: unmapped reads return 0 with SLVERR, unmapped writes are ignored
// and answer SLVERR, so a wrong offset in software is visible instead of hanging the bus.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module ring_mirror_regs #(
    parameter [31:0] HW_CONFIG = 32'd0   // value of the HW_CONFIG register (build parameters)
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
    output wire [63:0] cfg_ring_base,
    output wire [63:0] cfg_capacity,
    output wire [63:0] cfg_partition,
    output wire [63:0] cfg_replica_base,
    output wire [63:0] cfg_tail_addr,
    output wire [63:0] cfg_intent_addr,
    output wire [63:0] cfg_mirrored_addr,
    output wire [63:0] cfg_replica_tail_addr,
    output wire [31:0] cfg_poll_interval,
    output wire [31:0] cfg_irq_progress,
    output wire        cfg_mirrored_load,
    output wire [63:0] cfg_mirrored_value,

    // from the engine
    input  wire        st_busy,
    input  wire        st_idle,
    input  wire        st_error,
    input  wire [7:0]  st_fault,
    input  wire [63:0] st_mirrored,
    input  wire [63:0] st_tail,
    input  wire [63:0] st_bytes,
    input  wire [63:0] st_bursts,
    input  wire [63:0] st_overruns,
    input  wire [63:0] st_bytes_lost,
    input  wire [63:0] st_busy_cycles,
    input  wire        ev_sync_done,
    input  wire        ev_soft_reset_done,
    input  wire        ev_fault,
    input  wire        ev_progress,
    input  wire        ev_overrun,

    output wire        irq
);

`include "ring_mirror_regmap.vh"

localparam [1:0] RESP_OKAY = 2'b00, RESP_SLVERR = 2'b10;

// control and status
reg enable_reg, enable_next;
reg irq_en_reg, irq_en_next;
reg sync_reg, sync_next;
reg soft_reset_reg, soft_reset_next;
reg overrun_reg, overrun_next;
reg [2:0] irq_status_reg, irq_status_next;
reg [31:0] irq_progress_reg, irq_progress_next;
reg [31:0] poll_interval_reg, poll_interval_next;
// 64-bit configuration
reg [63:0] ring_base_reg, ring_base_next;
reg [63:0] capacity_reg, capacity_next;
reg [63:0] partition_reg, partition_next;
reg [63:0] replica_base_reg, replica_base_next;
reg [63:0] tail_addr_reg, tail_addr_next;
reg [63:0] intent_addr_reg, intent_addr_next;
reg [63:0] mirrored_addr_reg, mirrored_addr_next;
reg [63:0] replica_tail_addr_reg, replica_tail_addr_next;
reg [31:0] mirrored_lo_reg, mirrored_lo_next;   // staged until the _HI write
reg [31:0] mirrored_hi_reg, mirrored_hi_next;
reg mirrored_load_reg, mirrored_load_next;
reg [31:0] latch_hi_reg, latch_hi_next;         // _HI of the last latched _LO read

// AXI4-Lite handshake state
reg bvalid_reg, bvalid_next;
reg [1:0] bresp_reg, bresp_next;
reg rvalid_reg, rvalid_next;
reg [1:0] rresp_reg, rresp_next;
reg [31:0] rdata_reg, rdata_next;

// a write needs address and data together; one response outstanding at a time
wire wr_fire = s_axil_awvalid && s_axil_wvalid && !bvalid_reg;
wire rd_fire = s_axil_arvalid && !rvalid_reg;
wire [7:0] wr_addr = {s_axil_awaddr[7:2], 2'b00};
wire [7:0] rd_addr = {s_axil_araddr[7:2], 2'b00};
wire [31:0] wmask = {{8{s_axil_wstrb[3]}}, {8{s_axil_wstrb[2]}},
                     {8{s_axil_wstrb[1]}}, {8{s_axil_wstrb[0]}}};

function [31:0] merge(input [31:0] old, input [31:0] data, input [31:0] mask);
    begin
        merge = (old & ~mask) | (data & mask);
    end
endfunction

// bits written as 1 (with their byte enabled)
wire [31:0] wones = s_axil_wdata & wmask;

wire [31:0] status_word;
assign status_word = ({31'd0, st_busy} << RM_STATUS_BUSY_LSB)
                   | ({31'd0, st_idle} << RM_STATUS_IDLE_LSB)
                   | ({31'd0, st_error} << RM_STATUS_ERROR_LSB)
                   | ({31'd0, overrun_reg} << RM_STATUS_OVERRUN_LSB)
                   | ({24'd0, st_fault} << RM_STATUS_FAULT_LSB);
wire [31:0] control_word = ({31'd0, enable_reg} << RM_CONTROL_ENABLE_LSB)
                         | ({31'd0, sync_reg} << RM_CONTROL_SYNC_LSB)
                         | ({31'd0, soft_reset_reg} << RM_CONTROL_SOFT_RESET_LSB)
                         | ({31'd0, irq_en_reg} << RM_CONTROL_IRQ_ENABLE_LSB);
wire [31:0] irq_status_word = ({31'd0, irq_status_reg[0]} << RM_IRQ_STATUS_FAULT_LSB)
                            | ({31'd0, irq_status_reg[1]} << RM_IRQ_STATUS_PROGRESS_LSB)
                            | ({31'd0, irq_status_reg[2]} << RM_IRQ_STATUS_OVERRUN_LSB);

always @* begin
    enable_next = enable_reg;
    irq_en_next = irq_en_reg;
    sync_next = sync_reg && !ev_sync_done;
    soft_reset_next = soft_reset_reg && !ev_soft_reset_done;
    overrun_next = overrun_reg;
    irq_status_next = irq_status_reg;
    irq_progress_next = irq_progress_reg;
    poll_interval_next = poll_interval_reg;
    ring_base_next = ring_base_reg;
    capacity_next = capacity_reg;
    partition_next = partition_reg;
    replica_base_next = replica_base_reg;
    tail_addr_next = tail_addr_reg;
    intent_addr_next = intent_addr_reg;
    mirrored_addr_next = mirrored_addr_reg;
    replica_tail_addr_next = replica_tail_addr_reg;
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
        overrun_next = 1'b0;
        irq_status_next = 3'd0;
    end

    if (wr_fire) begin
        bvalid_next = 1'b1;
        bresp_next = RESP_OKAY;
        case (wr_addr)
            RM_REG_CONTROL: begin
                if (wmask[RM_CONTROL_ENABLE_LSB]) begin
                    enable_next = s_axil_wdata[RM_CONTROL_ENABLE_LSB];
                end
                if (wmask[RM_CONTROL_IRQ_ENABLE_LSB]) begin
                    irq_en_next = s_axil_wdata[RM_CONTROL_IRQ_ENABLE_LSB];
                end
                if (wones[RM_CONTROL_SYNC_LSB]) sync_next = 1'b1;
                if (wones[RM_CONTROL_SOFT_RESET_LSB]) soft_reset_next = 1'b1;
            end
            RM_REG_STATUS: begin
                if (wones[RM_STATUS_OVERRUN_LSB]) overrun_next = 1'b0;
            end
            RM_REG_IRQ_STATUS: begin
                if (wones[RM_IRQ_STATUS_FAULT_LSB]) irq_status_next[0] = 1'b0;
                if (wones[RM_IRQ_STATUS_PROGRESS_LSB]) irq_status_next[1] = 1'b0;
                if (wones[RM_IRQ_STATUS_OVERRUN_LSB]) irq_status_next[2] = 1'b0;
            end
            RM_REG_IRQ_PROGRESS: irq_progress_next = merge(irq_progress_reg, s_axil_wdata, wmask);
            RM_REG_POLL_INTERVAL: poll_interval_next = merge(poll_interval_reg, s_axil_wdata, wmask);
            RM_REG_RING_DATA_BASE_LO: ring_base_next[31:0] = merge(ring_base_reg[31:0], s_axil_wdata, wmask);
            RM_REG_RING_DATA_BASE_HI: ring_base_next[63:32] = merge(ring_base_reg[63:32], s_axil_wdata, wmask);
            RM_REG_RING_CAPACITY_LO: capacity_next[31:0] = merge(capacity_reg[31:0], s_axil_wdata, wmask);
            RM_REG_RING_CAPACITY_HI: capacity_next[63:32] = merge(capacity_reg[63:32], s_axil_wdata, wmask);
            RM_REG_PARTITION_SIZE_LO: partition_next[31:0] = merge(partition_reg[31:0], s_axil_wdata, wmask);
            RM_REG_PARTITION_SIZE_HI: partition_next[63:32] = merge(partition_reg[63:32], s_axil_wdata, wmask);
            RM_REG_REPLICA_DATA_BASE_LO: replica_base_next[31:0] = merge(replica_base_reg[31:0], s_axil_wdata, wmask);
            RM_REG_REPLICA_DATA_BASE_HI: replica_base_next[63:32] = merge(replica_base_reg[63:32], s_axil_wdata, wmask);
            RM_REG_RING_TAIL_ADDR_LO: tail_addr_next[31:0] = merge(tail_addr_reg[31:0], s_axil_wdata, wmask);
            RM_REG_RING_TAIL_ADDR_HI: tail_addr_next[63:32] = merge(tail_addr_reg[63:32], s_axil_wdata, wmask);
            RM_REG_RING_INTENT_ADDR_LO: intent_addr_next[31:0] = merge(intent_addr_reg[31:0], s_axil_wdata, wmask);
            RM_REG_RING_INTENT_ADDR_HI: intent_addr_next[63:32] = merge(intent_addr_reg[63:32], s_axil_wdata, wmask);
            RM_REG_RING_MIRRORED_ADDR_LO: mirrored_addr_next[31:0] = merge(mirrored_addr_reg[31:0], s_axil_wdata, wmask);
            RM_REG_RING_MIRRORED_ADDR_HI: mirrored_addr_next[63:32] = merge(mirrored_addr_reg[63:32], s_axil_wdata, wmask);
            RM_REG_REPLICA_TAIL_ADDR_LO: replica_tail_addr_next[31:0] = merge(replica_tail_addr_reg[31:0], s_axil_wdata, wmask);
            RM_REG_REPLICA_TAIL_ADDR_HI: replica_tail_addr_next[63:32] = merge(replica_tail_addr_reg[63:32], s_axil_wdata, wmask);
            RM_REG_MIRRORED_LO: mirrored_lo_next = merge(mirrored_lo_reg, s_axil_wdata, wmask);
            RM_REG_MIRRORED_HI: begin
                mirrored_hi_next = merge(mirrored_hi_reg, s_axil_wdata, wmask);
                mirrored_load_next = 1'b1;
            end
            RM_REG_ID, RM_REG_VERSION, RM_REG_HW_CONFIG,
            RM_REG_TAIL_SEEN_LO, RM_REG_TAIL_SEEN_HI, RM_REG_BYTES_COPIED_LO,
            RM_REG_BYTES_COPIED_HI, RM_REG_BURSTS_LO, RM_REG_BURSTS_HI, RM_REG_OVERRUNS_LO,
            RM_REG_OVERRUNS_HI, RM_REG_BUSY_CYCLES_LO, RM_REG_BUSY_CYCLES_HI,
            RM_REG_BYTES_LOST_LO, RM_REG_BYTES_LOST_HI: begin
                // read-only: writes are ignored but the address is mapped
            end
            default: bresp_next = RESP_SLVERR;
        endcase
    end

    // engine events win over a simultaneous clear
    if (ev_fault) irq_status_next[0] = 1'b1;
    if (ev_progress) irq_status_next[1] = 1'b1;
    if (ev_overrun) begin
        irq_status_next[2] = 1'b1;
        overrun_next = 1'b1;
    end

    if (rd_fire) begin
        rvalid_next = 1'b1;
        rresp_next = RESP_OKAY;
        rdata_next = 32'd0;
        case (rd_addr)
            RM_REG_ID: rdata_next = RM_ID_VALUE;
            RM_REG_VERSION: rdata_next = RM_VERSION_VALUE;
            RM_REG_HW_CONFIG: rdata_next = HW_CONFIG;
            RM_REG_CONTROL: rdata_next = control_word;
            RM_REG_STATUS: rdata_next = status_word;
            RM_REG_IRQ_STATUS: rdata_next = irq_status_word;
            RM_REG_IRQ_PROGRESS: rdata_next = irq_progress_reg;
            RM_REG_POLL_INTERVAL: rdata_next = poll_interval_reg;
            RM_REG_RING_DATA_BASE_LO: rdata_next = ring_base_reg[31:0];
            RM_REG_RING_DATA_BASE_HI: rdata_next = ring_base_reg[63:32];
            RM_REG_RING_CAPACITY_LO: rdata_next = capacity_reg[31:0];
            RM_REG_RING_CAPACITY_HI: rdata_next = capacity_reg[63:32];
            RM_REG_PARTITION_SIZE_LO: rdata_next = partition_reg[31:0];
            RM_REG_PARTITION_SIZE_HI: rdata_next = partition_reg[63:32];
            RM_REG_REPLICA_DATA_BASE_LO: rdata_next = replica_base_reg[31:0];
            RM_REG_REPLICA_DATA_BASE_HI: rdata_next = replica_base_reg[63:32];
            RM_REG_RING_TAIL_ADDR_LO: rdata_next = tail_addr_reg[31:0];
            RM_REG_RING_TAIL_ADDR_HI: rdata_next = tail_addr_reg[63:32];
            RM_REG_RING_INTENT_ADDR_LO: rdata_next = intent_addr_reg[31:0];
            RM_REG_RING_INTENT_ADDR_HI: rdata_next = intent_addr_reg[63:32];
            RM_REG_RING_MIRRORED_ADDR_LO: rdata_next = mirrored_addr_reg[31:0];
            RM_REG_RING_MIRRORED_ADDR_HI: rdata_next = mirrored_addr_reg[63:32];
            RM_REG_REPLICA_TAIL_ADDR_LO: rdata_next = replica_tail_addr_reg[31:0];
            RM_REG_REPLICA_TAIL_ADDR_HI: rdata_next = replica_tail_addr_reg[63:32];
            RM_REG_MIRRORED_LO: begin
                rdata_next = st_mirrored[31:0];
                latch_hi_next = st_mirrored[63:32];
            end
            RM_REG_TAIL_SEEN_LO: begin
                rdata_next = st_tail[31:0];
                latch_hi_next = st_tail[63:32];
            end
            RM_REG_BYTES_COPIED_LO: begin
                rdata_next = st_bytes[31:0];
                latch_hi_next = st_bytes[63:32];
            end
            RM_REG_BURSTS_LO: begin
                rdata_next = st_bursts[31:0];
                latch_hi_next = st_bursts[63:32];
            end
            RM_REG_OVERRUNS_LO: begin
                rdata_next = st_overruns[31:0];
                latch_hi_next = st_overruns[63:32];
            end
            RM_REG_BUSY_CYCLES_LO: begin
                rdata_next = st_busy_cycles[31:0];
                latch_hi_next = st_busy_cycles[63:32];
            end
            RM_REG_BYTES_LOST_LO: begin
                rdata_next = st_bytes_lost[31:0];
                latch_hi_next = st_bytes_lost[63:32];
            end
            RM_REG_MIRRORED_HI, RM_REG_TAIL_SEEN_HI, RM_REG_BYTES_COPIED_HI, RM_REG_BURSTS_HI,
            RM_REG_OVERRUNS_HI, RM_REG_BUSY_CYCLES_HI,
            RM_REG_BYTES_LOST_HI: rdata_next = latch_hi_reg;
            default: rresp_next = RESP_SLVERR;
        endcase
    end
end

always @(posedge clk) begin
    enable_reg <= enable_next;
    irq_en_reg <= irq_en_next;
    sync_reg <= sync_next;
    soft_reset_reg <= soft_reset_next;
    overrun_reg <= overrun_next;
    irq_status_reg <= irq_status_next;
    irq_progress_reg <= irq_progress_next;
    poll_interval_reg <= poll_interval_next;
    ring_base_reg <= ring_base_next;
    capacity_reg <= capacity_next;
    partition_reg <= partition_next;
    replica_base_reg <= replica_base_next;
    tail_addr_reg <= tail_addr_next;
    intent_addr_reg <= intent_addr_next;
    mirrored_addr_reg <= mirrored_addr_next;
    replica_tail_addr_reg <= replica_tail_addr_next;
    mirrored_lo_reg <= mirrored_lo_next;
    mirrored_hi_reg <= mirrored_hi_next;
    mirrored_load_reg <= mirrored_load_next;
    latch_hi_reg <= latch_hi_next;
    bvalid_reg <= bvalid_next;
    bresp_reg <= bresp_next;
    rvalid_reg <= rvalid_next;
    rresp_reg <= rresp_next;
    rdata_reg <= rdata_next;

    if (rst) begin
        enable_reg <= RM_RST_CONTROL[RM_CONTROL_ENABLE_LSB];
        irq_en_reg <= RM_RST_CONTROL[RM_CONTROL_IRQ_ENABLE_LSB];
        sync_reg <= 1'b0;
        soft_reset_reg <= 1'b0;
        overrun_reg <= 1'b0;
        irq_status_reg <= RM_RST_IRQ_STATUS[2:0];
        irq_progress_reg <= RM_RST_IRQ_PROGRESS;
        poll_interval_reg <= RM_RST_POLL_INTERVAL;
        ring_base_reg <= RM_RST_RING_DATA_BASE;
        capacity_reg <= RM_RST_RING_CAPACITY;
        partition_reg <= RM_RST_PARTITION_SIZE;
        replica_base_reg <= RM_RST_REPLICA_DATA_BASE;
        tail_addr_reg <= RM_RST_RING_TAIL_ADDR;
        intent_addr_reg <= RM_RST_RING_INTENT_ADDR;
        mirrored_addr_reg <= RM_RST_RING_MIRRORED_ADDR;
        replica_tail_addr_reg <= RM_RST_REPLICA_TAIL_ADDR;
        mirrored_lo_reg <= 32'd0;
        mirrored_load_reg <= 1'b0;
        latch_hi_reg <= 32'd0;
        bvalid_reg <= 1'b0;
        bresp_reg <= RESP_OKAY;
        rvalid_reg <= 1'b0;
        rresp_reg <= RESP_OKAY;
        rdata_reg <= 32'd0;
        mirrored_hi_reg <= 32'd0;
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

assign cfg_enable = enable_reg;
assign cfg_sync = sync_reg;
assign cfg_soft_reset = soft_reset_reg;
assign cfg_ring_base = ring_base_reg;
assign cfg_capacity = capacity_reg;
assign cfg_partition = partition_reg;
assign cfg_replica_base = replica_base_reg;
assign cfg_tail_addr = tail_addr_reg;
assign cfg_intent_addr = intent_addr_reg;
assign cfg_mirrored_addr = mirrored_addr_reg;
assign cfg_replica_tail_addr = replica_tail_addr_reg;
assign cfg_poll_interval = poll_interval_reg;
assign cfg_irq_progress = irq_progress_reg;
assign cfg_mirrored_load = mirrored_load_reg;
assign cfg_mirrored_value = {mirrored_hi_reg, mirrored_lo_reg};
assign irq = irq_en_reg && irq_status_reg != 3'd0;

endmodule

`resetall
