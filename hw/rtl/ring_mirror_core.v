// Ring-mirror engine: the round controller that copies committed bytes of a pyshm ring into
// its replica and publishes the mirrored position (docs/hw.md, "One copy round").
//
// One round:
//   1. read the ring's tail word t. Not a multiple of 8: BAD_TAIL. Below the tail seen
//      before (or below MIRRORED as loaded): TAIL_BACKWARDS. Not beyond the start: idle.
//   2. plan: if t - start > capacity the producer lapped the engine: skip to the first
//      partition start at or after t - capacity (after two rounds in a row that kept
//      nothing, to the newest partition: docs/hw.md, "Catch-up");
//   3. raise the replica's tail-intent word (REPLICA_TAIL_ADDR + 0x80) to the round's end
//      (after a resynchronisation to at least start + capacity - partition + 1) before any
//      data write of the round; the data reads start meanwhile;
//   4. copy [start, t) with rm_mover (bursts split at MAX_BURST_LEN-beat boundaries);
//   5. after the last read beat, read tail intent i. i < t: BAD_INTENT. If
//      i - start > capacity bytes may have been overwritten while read: read the tail
//      again (t2 < t: TAIL_BACKWARDS; i - t2 > capacity, which no producer can reach:
//      INTENT_RANGE), then keep [b, t) for b the first partition start at or after
//      i - capacity when b < t, or keep nothing and restart at b;
//   6. once every write is acknowledged, (after a kept partial round, raise the replica's
//      tail intent to b + capacity - partition + 1), write t to the replica's tail word,
//      then to the ring's mirrored word.
// Every 64-bit position operation has a pipeline state of its own and reads registers only,
// so no carry chain feeds another within a cycle. Positions are compared, never wrapped:
// offsets within a round are round-relative (rm_mover), so a tail at 2^64 - 8 copies like
// any other; a resynchronisation whose replica tail intent would pass 2^64 - 1 stops with
// POSITION_LIMIT instead of wrapping.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module ring_mirror_core #(
    parameter DATA_WIDTH = 64,          // AXI4 data bits: 64, 128, 256 or 512
    parameter ADDR_WIDTH = 40,          // AXI4 address bits, 32..64
    parameter ID_WIDTH = 1,             // AXI4 ID bits; the engine always uses ID 0
    parameter MAX_BURST_LEN = 16,       // beats per burst, power of two, 1..256
    parameter MAX_OUTSTANDING = 4,      // read bursts in flight at most, 1..255
    parameter FIFO_DEPTH = 64,          // read-data FIFO beats, power of two >= MAX_BURST_LEN
    parameter [3:0] AXI_CACHE = 4'b1111,// AxCACHE: write-back allocate, for coherent ports
    parameter [2:0] AXI_PROT = 3'b010   // AxPROT: unprivileged, non-secure, data
) (
    input  wire                    clk,
    input  wire                    rst,

    // configuration (from the register file, checked and stable while the engine runs)
    input  wire                    cfg_enable,
    input  wire                    cfg_sync,          // a one-shot round is requested
    input  wire                    cfg_soft_reset,    // reset requested (acted on when quiet)
    input  wire                    cfg_mirrored_load, // pulse: start from cfg_mirrored_value
    input  wire [63:0]             cfg_mirrored_value,
    input  wire [ADDR_WIDTH-1:0]   cfg_ring_base,
    input  wire [ADDR_WIDTH-1:0]   cfg_replica_base,
    input  wire [ADDR_WIDTH-1:0]   cfg_capacity,
    input  wire [ADDR_WIDTH-1:0]   cfg_cap_mask,      // capacity - 1
    input  wire [ADDR_WIDTH-1:0]   cfg_part_mask,     // partition - 1
    input  wire [ADDR_WIDTH-1:0]   cfg_cap_less_part, // capacity - partition
    input  wire [ADDR_WIDTH-1:0]   cfg_tail_addr,
    input  wire [ADDR_WIDTH-1:0]   cfg_intent_addr,
    input  wire [ADDR_WIDTH-1:0]   cfg_mirrored_addr,
    input  wire [ADDR_WIDTH-1:0]   cfg_replica_tail_addr,
    input  wire [ADDR_WIDTH-1:0]   cfg_rint_addr,     // replica tail + 0x80
    input  wire [31:0]             cfg_poll_interval,
    input  wire [31:0]             cfg_irq_progress,
    input  wire [31:0]             cfg_watchdog,
    input  wire [7:0]              cfg_fault,         // configuration check result
    input  wire                    cfg_ready,         // cfg_fault is up to date

    // status and events (to the register file)
    output wire                    st_busy,
    output wire                    st_idle,
    output wire                    st_error,          // stopped on a fault
    output wire [7:0]              st_fault,
    output wire [63:0]             st_mirrored,
    output wire [63:0]             st_tail,
    output wire [63:0]             st_bytes,
    output wire [63:0]             st_bursts,
    output wire [63:0]             st_overruns,
    output wire [63:0]             st_bytes_lost,
    output wire [63:0]             st_busy_cycles,
    output wire [63:0]             st_fault_addr,
    output wire [63:0]             st_fault_pos,
    output wire                    ev_sync_done,
    output wire                    ev_soft_reset_done,
    output wire                    ev_fault,
    output wire                    ev_progress,
    output wire                    ev_overrun,

    // AXI4 master
    output wire [ID_WIDTH-1:0]     m_axi_awid,
    output wire [ADDR_WIDTH-1:0]   m_axi_awaddr,
    output wire [7:0]              m_axi_awlen,
    output wire [2:0]              m_axi_awsize,
    output wire [1:0]              m_axi_awburst,
    output wire                    m_axi_awlock,
    output wire [3:0]              m_axi_awcache,
    output wire [2:0]              m_axi_awprot,
    output wire                    m_axi_awvalid,
    input  wire                    m_axi_awready,
    output wire [DATA_WIDTH-1:0]   m_axi_wdata,
    output wire [DATA_WIDTH/8-1:0] m_axi_wstrb,
    output wire                    m_axi_wlast,
    output wire                    m_axi_wvalid,
    input  wire                    m_axi_wready,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [ID_WIDTH-1:0]     m_axi_bid,     // single ID: responses come in order
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [1:0]              m_axi_bresp,
    input  wire                    m_axi_bvalid,
    output wire                    m_axi_bready,
    output wire [ID_WIDTH-1:0]     m_axi_arid,
    output wire [ADDR_WIDTH-1:0]   m_axi_araddr,
    output wire [7:0]              m_axi_arlen,
    output wire [2:0]              m_axi_arsize,
    output wire [1:0]              m_axi_arburst,
    output wire                    m_axi_arlock,
    output wire [3:0]              m_axi_arcache,
    output wire [2:0]              m_axi_arprot,
    output wire                    m_axi_arvalid,
    input  wire                    m_axi_arready,
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [ID_WIDTH-1:0]     m_axi_rid,
    /* verilator lint_on UNUSEDSIGNAL */
    input  wire [DATA_WIDTH-1:0]   m_axi_rdata,
    input  wire [1:0]              m_axi_rresp,
    input  wire                    m_axi_rlast,
    input  wire                    m_axi_rvalid,
    output wire                    m_axi_rready
);

`include "ring_mirror_regmap.vh"

localparam BYTES = DATA_WIDTH / 8;
localparam LSB = $clog2(BYTES);
localparam AW = ADDR_WIDTH;
localparam BW = AW - LSB + 1;                       // beats of a round
localparam [BYTES-1:0] STRB_ALL = {BYTES{1'b1}};

initial begin
    if (DATA_WIDTH < 64 || DATA_WIDTH > 512 || (DATA_WIDTH & (DATA_WIDTH - 1)) != 0) begin
        $error("ring_mirror_core: DATA_WIDTH (%0d) must be 64, 128, 256 or 512", DATA_WIDTH);
        $finish;
    end
    if (ADDR_WIDTH < 32 || ADDR_WIDTH > 64) begin
        $error("ring_mirror_core: ADDR_WIDTH (%0d) must be 32..64", ADDR_WIDTH);
        $finish;
    end
    if (MAX_BURST_LEN < 1 || MAX_BURST_LEN > 256 || (MAX_BURST_LEN & (MAX_BURST_LEN - 1)) != 0
            || MAX_BURST_LEN * BYTES > 4096) begin
        $error("ring_mirror_core: MAX_BURST_LEN (%0d) must be a power of two, 1..256, within 4 KiB",
               MAX_BURST_LEN);
        $finish;
    end
    if (MAX_OUTSTANDING < 1 || MAX_OUTSTANDING > 255) begin
        $error("ring_mirror_core: MAX_OUTSTANDING (%0d) must be 1..255", MAX_OUTSTANDING);
        $finish;
    end
    if (FIFO_DEPTH < MAX_BURST_LEN || FIFO_DEPTH > 16384
            || (FIFO_DEPTH & (FIFO_DEPTH - 1)) != 0) begin
        $error("ring_mirror_core: FIFO_DEPTH (%0d) must be a power of two, MAX_BURST_LEN..16384",
               FIFO_DEPTH);
        $finish;
    end
end

localparam [4:0]
    S_IDLE = 5'd0,
    S_TAIL_R = 5'd1,      // tail word read
    S_PLAN1 = 5'd2,       // checks of the tail; lapped? oldest boundary
    S_PLAN2 = 5'd3,       // choose the copy start
    S_PLAN3 = 5'd4,       // lost bytes, round length, resynchronised replica intent
    S_PLAN4 = 5'd5,       // run geometry, replica intent wanted
    S_RINT_R = 5'd6,      // replica tail-intent read (first round after a (re)start)
    S_RINT_W = 5'd7,      // raise the replica tail intent, start the copy
    S_COPY = 5'd8,        // until the last read beat
    S_INTENT_R = 5'd9,    // tail intent read
    S_CHK1 = 5'd10,       // intent below tail? lapped during the copy?
    S_CHK2 = 5'd11,
    S_TAIL2_R = 5'd12,    // second tail read (after an overrun)
    S_CHK3 = 5'd13,       // hostile intent? keep what is intact
    S_CHK4 = 5'd14,
    S_WDRAIN = 5'd15,     // until every data write is acknowledged
    S_PUB_RINT = 5'd16,
    S_PUB_REPLICA = 5'd17,
    S_PUB_RING = 5'd18,
    S_DRAIN = 5'd19,      // a fault: let the bus go quiet
    S_FINFO1 = 5'd20,     // fault position
    S_FINFO2 = 5'd21,     // fault address
    S_FAULT = 5'd22,
    S_PLAN5 = 5'd23,      // replica intent wanted (its comparison registered in PLAN4)
    S_RINT_C = 5'd24,     // let the grow comparison see the final intent values
    S_CHK5 = 5'd25;       // same, after a kept partial round

localparam [1:0] W_WORD = 2'd0, W_SRC = 2'd1, W_DST = 2'd2, W_CFG = 2'd3;
// header words, by a 3-bit selector: the 40-bit address mux sits after a register
localparam [2:0] WS_TAIL = 3'd0, WS_INTENT = 3'd1, WS_RINT = 3'd2, WS_RTAIL = 3'd3,
                 WS_MIRRORED = 3'd4;

// ---------------------------------------------------------------- mover
wire mv_rd_done, mv_wr_done, mv_burst, mv_word_done, mv_word_busy, mv_err, mv_quiet;
wire [63:0] mv_rdata;
wire [1:0] mv_resp;
wire [7:0] mv_err_code;
wire [1:0] mv_err_where;
wire [BW-1:0] mv_err_idx;

// ---------------------------------------------------------------- state
reg [4:0] state_reg, state_next;
reg [7:0] fault_reg, fault_next;
reg [1:0] fwhere_reg, fwhere_next;
reg [BW-1:0] fidx_reg, fidx_next;
reg [2:0] fsel_reg, fsel_next;               // header word of a word-level fault
reg [63:0] fpos_reg, fpos_next;
reg [AW-1:0] faddr_reg, faddr_next;

reg [63:0] start_reg, start_next;            // first position of the next round
reg [63:0] mirrored_reg, mirrored_next;      // last published position
reg [63:0] tail_reg, tail_next;              // tail seen by the latest poll
reg [63:0] tnew_reg, tnew_next;              // this round's end
reg [63:0] intent_reg, intent_next;          // tail intent read after the copy
reg [63:0] cstart_reg, cstart_next;          // first position kept by this round
reg [63:0] rbase_reg, rbase_next;            // beat-aligned position of the run's beat 0
reg [63:0] rint_reg, rint_next;              // what the replica's tail intent holds
reg [63:0] rwant_reg, rwant_next;            // replica tail intent this round needs
reg [63:0] newest_reg, newest_next;          // partition start below a position
reg [63:0] oldest_reg, oldest_next;          // first intact partition start
reg [63:0] diff_reg, diff_next;              // a position difference being checked
reg [63:0] dlost_reg, dlost_next;
reg [AW-1:0] len_reg, len_next;              // bytes of the round (<= capacity <= 2^(AW-1))

reg f_bad_reg, f_bad_next;
reg f_back_reg, f_back_next;
reg f_nothing_reg, f_nothing_next;
reg f_lapped_reg, f_lapped_next;
reg f_ngt_reg, f_ngt_next;                   // newest partition above the start
reg f_low_reg, f_low_next;                   // intent below tail
reg f_borrow_reg, f_borrow_next;             // second tail above the intent
reg f_ovf_reg, f_ovf_next;                   // rwant passed 2^64 - 1
// comparisons registered every cycle, read only in states where their inputs have been
// stable for a cycle, so no 64-bit compare feeds a wide select in the same cycle
reg f_grow_reg;                              // rwant > rint
reg f_keep_reg;                              // oldest < tnew
reg f_rw_gt_t_reg;                           // rwant > tnew
reg [31:0] prog_sum_reg;                     // progress + len
reg prog_hit_reg;                            // that reaches IRQ_PROGRESS
reg gap_reg, gap_next;                       // resynchronised since the last publish
reg torn_reg, torn_next;                     // this round keeps nothing
reg keep_part_reg, keep_part_next;           // this round keeps only its intact part
reg [1:0] torn_run_reg, torn_run_next;       // rounds in a row that kept nothing
reg rint_known_reg, rint_known_next;
reg sync_round_reg, sync_round_next;
reg [31:0] poll_cnt_reg, poll_cnt_next;
reg [31:0] progress_reg, progress_next;
reg [63:0] bytes_reg, bytes_next;
reg [63:0] bursts_reg, bursts_next;
reg [63:0] overruns_reg, overruns_next;
reg [63:0] lost_reg, lost_next;
reg [63:0] busy_cycles_reg, busy_cycles_next;

reg ev_sync_done_reg, ev_sync_done_next;
reg ev_soft_reset_done_reg, ev_soft_reset_done_next;
reg ev_fault_reg, ev_fault_next;
reg ev_progress_reg, ev_progress_next;
reg ev_overrun_reg, ev_overrun_next;

// requests to the mover (registered: one cycle after the decision)
reg word_rd_reg, word_rd_next;
reg word_wr_reg, word_wr_next;
reg [2:0] wsel_reg, wsel_next;               // header word of the current access
reg [63:0] word_data_reg, word_data_next;
reg copy_go_reg, copy_go_next;
reg [AW-1:0] copy_off_reg, copy_off_next;
reg [BW-1:0] copy_beats_reg, copy_beats_next;
reg [BYTES-1:0] first_strb_reg, first_strb_next;
reg [BYTES-1:0] last_strb_reg, last_strb_next;
reg clear_reg, clear_next;

reg [AW-1:0] word_addr;
always @* begin
    case (wsel_reg)
        WS_INTENT: word_addr = cfg_intent_addr;
        WS_RINT: word_addr = cfg_rint_addr;
        WS_RTAIL: word_addr = cfg_replica_tail_addr;
        WS_MIRRORED: word_addr = cfg_mirrored_addr;
        default: word_addr = cfg_tail_addr;
    endcase
end

// ---------------------------------------------------------------- arithmetic helpers
wire [63:0] pmask64 = {{(64-AW){1'b0}}, cfg_part_mask};
wire [63:0] cmp64 = {{(64-AW){1'b0}}, cfg_cap_less_part};
// a difference beyond the capacity (differences are unsigned)
wire diff_gt_cap = |(diff_reg >> AW) || diff_reg[AW-1:0] > cfg_capacity;
// partition start below position x (x > 0, a multiple of 8)
function [63:0] part_below(input [63:0] x, input [63:0] pm);
    begin
        part_below = (x - 64'd8) & ~pm;
    end
endfunction
wire sync_req = cfg_sync && !ev_sync_done_reg;
wire catch_up = torn_run_reg == 2'd2 && (f_lapped_reg ? cmp64 != 64'd0 : f_ngt_reg);
wire word_ok = mv_word_done && !mv_resp[1];
wire word_bad = mv_word_done && mv_resp[1];
wire [7:0] word_rd_fault = mv_resp == 2'b11 ? RM_FAULT_READ_DECERR : RM_FAULT_READ_SLVERR;
wire [7:0] word_wr_fault = mv_resp == 2'b11 ? RM_FAULT_WRITE_DECERR : RM_FAULT_WRITE_SLVERR;
/* verilator lint_off UNUSEDSIGNAL */
wire [AW-1:0] beats_sum = len_reg + {{(AW-LSB){1'b0}}, cstart_reg[LSB-1:0]}
                        + {{(AW-LSB){1'b0}}, {LSB{1'b1}}};
/* verilator lint_on UNUSEDSIGNAL */

always @* begin
    state_next = state_reg;
    fault_next = fault_reg;
    fwhere_next = fwhere_reg;
    fidx_next = fidx_reg;
    fsel_next = fsel_reg;
    fpos_next = fpos_reg;
    faddr_next = faddr_reg;
    start_next = start_reg;
    mirrored_next = mirrored_reg;
    tail_next = tail_reg;
    tnew_next = tnew_reg;
    intent_next = intent_reg;
    cstart_next = cstart_reg;
    rbase_next = rbase_reg;
    rint_next = rint_reg;
    rwant_next = rwant_reg;
    newest_next = newest_reg;
    oldest_next = oldest_reg;
    diff_next = diff_reg;
    dlost_next = dlost_reg;
    len_next = len_reg;
    f_bad_next = f_bad_reg;
    f_back_next = f_back_reg;
    f_nothing_next = f_nothing_reg;
    f_lapped_next = f_lapped_reg;
    f_ngt_next = f_ngt_reg;
    f_low_next = f_low_reg;
    f_borrow_next = f_borrow_reg;
    f_ovf_next = f_ovf_reg;
    gap_next = gap_reg;
    torn_next = torn_reg;
    keep_part_next = keep_part_reg;
    torn_run_next = torn_run_reg;
    rint_known_next = rint_known_reg;
    sync_round_next = sync_round_reg;
    poll_cnt_next = poll_cnt_reg;
    progress_next = progress_reg;
    bytes_next = bytes_reg;
    bursts_next = bursts_reg + {63'd0, mv_burst};
    overruns_next = overruns_reg;
    lost_next = lost_reg;
    busy_cycles_next = busy_cycles_reg;
    ev_sync_done_next = 1'b0;
    ev_soft_reset_done_next = 1'b0;
    ev_fault_next = 1'b0;
    ev_progress_next = 1'b0;
    ev_overrun_next = 1'b0;
    word_rd_next = 1'b0;
    word_wr_next = 1'b0;
    wsel_next = wsel_reg;
    word_data_next = word_data_reg;
    copy_go_next = 1'b0;
    copy_off_next = copy_off_reg;
    copy_beats_next = copy_beats_reg;
    first_strb_next = first_strb_reg;
    last_strb_next = last_strb_reg;
    clear_next = 1'b0;

    if (state_reg != S_IDLE && state_reg != S_FAULT) begin
        busy_cycles_next = busy_cycles_reg + 64'd1;
    end

    case (state_reg)
        S_IDLE: begin
            if (cfg_soft_reset) begin
                start_next = 64'd0;
                mirrored_next = 64'd0;
                tail_next = 64'd0;
                bytes_next = 64'd0;
                bursts_next = 64'd0;
                overruns_next = 64'd0;
                lost_next = 64'd0;
                busy_cycles_next = 64'd0;
                progress_next = 32'd0;
                poll_cnt_next = 32'd0;
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                rint_known_next = 1'b0;
                ev_soft_reset_done_next = 1'b1;
            end else if (cfg_mirrored_load) begin
                start_next = cfg_mirrored_value;
                mirrored_next = cfg_mirrored_value;
                tail_next = cfg_mirrored_value;
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                rint_known_next = 1'b0;
            end else if (cfg_enable || sync_req) begin
                if (poll_cnt_reg != 32'd0 && !sync_req) begin
                    poll_cnt_next = poll_cnt_reg - 32'd1;
                end else if (!cfg_ready) begin
                    // configuration written within the last cycles: wait for its check
                end else if (cfg_fault != RM_FAULT_NONE) begin
                    fault_next = cfg_fault;
                    fwhere_next = W_CFG;
                    state_next = S_DRAIN;
                end else begin
                    word_rd_next = 1'b1;
                    wsel_next = WS_TAIL;
                    sync_round_next = sync_req;
                    state_next = S_TAIL_R;
                end
            end
        end
        S_TAIL_R: begin
            if (mv_word_done) begin
                tnew_next = mv_rdata;
                tail_next = mv_rdata;
                f_bad_next = mv_rdata[2:0] != 3'd0;
                f_back_next = mv_rdata < tail_reg;
                f_nothing_next = mv_rdata <= start_reg;
                diff_next = mv_rdata - start_reg;
                newest_next = part_below(mv_rdata, pmask64);
                if (word_bad) begin
                    fault_next = word_rd_fault;
                    fwhere_next = W_WORD;
                    fsel_next = wsel_reg;
                    state_next = S_DRAIN;
                end else begin
                    state_next = S_PLAN1;
                end
            end
        end
        S_PLAN1: begin
            f_lapped_next = diff_gt_cap;
            oldest_next = newest_reg - cmp64;
            f_ngt_next = newest_reg > start_reg;
            if (f_bad_reg || f_back_reg) begin
                fault_next = f_bad_reg ? RM_FAULT_BAD_TAIL : RM_FAULT_TAIL_BACKWARDS;
                fwhere_next = W_WORD;
                fsel_next = WS_TAIL;
                state_next = S_DRAIN;
            end else if (f_nothing_reg) begin
                // nothing new: a one-shot sync is complete, continuous mode waits a while
                ev_sync_done_next = sync_round_reg;
                poll_cnt_next = cfg_poll_interval;
                state_next = S_IDLE;
            end else begin
                state_next = S_PLAN2;
            end
        end
        S_PLAN2: begin
            cstart_next = f_lapped_reg ? oldest_reg : start_reg;
            if (catch_up) begin
                // two rounds in a row kept nothing: the producer writes a lap faster than
                // one is copied, so copy only the newest partition (docs/hw.md, "Catch-up")
                cstart_next = newest_reg;
            end
            if (f_lapped_reg || catch_up) begin
                overruns_next = overruns_reg + 64'd1;
                ev_overrun_next = 1'b1;
                gap_next = 1'b1;
            end
            state_next = S_PLAN3;
        end
        S_PLAN3: begin
            dlost_next = cstart_reg - start_reg;
            len_next = tnew_reg[AW-1:0] - cstart_reg[AW-1:0];
            {f_ovf_next, rwant_next} = {1'b0, cstart_reg} + {1'b0, cmp64} + 65'd1;
            rbase_next = cstart_reg & ~((64'd1 << LSB) - 64'd1);
            state_next = S_PLAN4;
        end
        S_PLAN4: begin
            lost_next = lost_reg + dlost_reg;
            copy_beats_next = {1'b0, beats_sum[AW-1:LSB]};
            copy_off_next = rbase_reg[AW-1:0] & cfg_cap_mask;
            first_strb_next = STRB_ALL << cstart_reg[LSB-1:0];
            last_strb_next = tnew_reg[LSB-1:0] == 0 ? STRB_ALL
                           : STRB_ALL >> (BYTES[LSB:0] - {1'b0, tnew_reg[LSB-1:0]});
            state_next = S_PLAN5;
        end
        S_PLAN5: begin
            // replica readers must start at cstart after a resynchronisation
            rwant_next = (gap_reg && f_rw_gt_t_reg) ? rwant_reg : tnew_reg;
            if (gap_reg && f_ovf_reg) begin
                fault_next = RM_FAULT_POSITION_LIMIT;
                fwhere_next = W_WORD;
                fsel_next = WS_RINT;
                state_next = S_DRAIN;
            end else if (rint_known_reg) begin
                state_next = S_RINT_C;
            end else begin
                // first round since (re)start: "only if it grows" needs the current value
                word_rd_next = 1'b1;
                wsel_next = WS_RINT;
                state_next = S_RINT_R;
            end
        end
        S_RINT_R: begin
            if (mv_word_done) begin
                rint_next = mv_rdata;
                if (word_bad) begin
                    fault_next = word_rd_fault;
                    fwhere_next = W_WORD;
                    fsel_next = wsel_reg;
                    state_next = S_DRAIN;
                end else begin
                    rint_known_next = 1'b1;
                    state_next = S_RINT_C;
                end
            end
        end
        S_RINT_C: begin
            state_next = S_RINT_W;
        end
        S_RINT_W: begin
            // the mover holds data writes back until this word write is acknowledged;
            // the reads of the run start at once
            if (f_grow_reg) begin
                word_wr_next = 1'b1;
                wsel_next = WS_RINT;
                word_data_next = rwant_reg;
                rint_next = rwant_reg;
            end
            copy_go_next = 1'b1;
            torn_next = 1'b0;
            keep_part_next = 1'b0;
            state_next = S_COPY;
        end
        S_COPY: begin
            if (word_bad) begin
                // the replica tail-intent write failed
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = S_DRAIN;
            end else if (mv_rd_done && !copy_go_reg && !mv_word_busy) begin
                // every data beat has arrived: now tail intent proves the copy intact
                word_rd_next = 1'b1;
                wsel_next = WS_INTENT;
                state_next = S_INTENT_R;
            end
        end
        S_INTENT_R: begin
            if (word_bad) begin
                fault_next = word_rd_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = S_DRAIN;
            end else if (mv_word_done) begin
                intent_next = mv_rdata;
                f_low_next = mv_rdata < tnew_reg;
                diff_next = mv_rdata - cstart_reg;
                newest_next = part_below(mv_rdata, pmask64);
                state_next = S_CHK1;
            end
        end
        S_CHK1: begin
            f_lapped_next = diff_gt_cap;
            oldest_next = newest_reg - cmp64;
            if (f_low_reg) begin
                fault_next = RM_FAULT_BAD_INTENT;
                fwhere_next = W_WORD;
                fsel_next = WS_INTENT;
                state_next = S_DRAIN;
            end else begin
                state_next = S_CHK2;
            end
        end
        S_CHK2: begin
            if (!f_lapped_reg) begin
                state_next = S_WDRAIN;
            end else begin
                // bytes may have been overwritten while read; first make sure the intent
                // is one a producer can have written: read the tail again
                word_rd_next = 1'b1;
                wsel_next = WS_TAIL;
                state_next = S_TAIL2_R;
            end
        end
        S_TAIL2_R: begin
            if (word_bad) begin
                fault_next = word_rd_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = S_DRAIN;
            end else if (mv_word_done) begin
                tail_next = mv_rdata;
                f_back_next = mv_rdata < tnew_reg;
                f_borrow_next = intent_reg < mv_rdata;
                diff_next = intent_reg - mv_rdata;
                state_next = S_CHK3;
            end
        end
        S_CHK3: begin
            if (f_back_reg) begin
                fault_next = RM_FAULT_TAIL_BACKWARDS;
                fwhere_next = W_WORD;
                fsel_next = WS_TAIL;
                state_next = S_DRAIN;
            end else if (!f_borrow_reg && diff_gt_cap) begin
                // a producer never has more than a capacity uncommitted
                fault_next = RM_FAULT_INTENT_RANGE;
                fwhere_next = W_WORD;
                fsel_next = WS_INTENT;
                state_next = S_DRAIN;
            end else begin
                // lapped during the copy: bytes below intent - capacity may be torn,
                // those from the next partition start on were read intact
                overruns_next = overruns_reg + 64'd1;
                ev_overrun_next = 1'b1;
                gap_next = 1'b1;
                dlost_next = oldest_reg - cstart_reg;
                if (f_keep_reg) begin
                    cstart_next = oldest_reg;
                    keep_part_next = 1'b1;
                end else begin
                    // nothing intact: publish nothing, restart at the oldest boundary
                    start_next = oldest_reg;
                    torn_next = 1'b1;
                    if (torn_run_reg != 2'd2) torn_run_next = torn_run_reg + 2'd1;
                end
                state_next = S_CHK4;
            end
        end
        S_CHK4: begin
            lost_next = lost_reg + dlost_reg;
            {f_ovf_next, rwant_next} = {1'b0, cstart_reg} + {1'b0, cmp64} + 65'd1;
            state_next = S_CHK5;
        end
        S_CHK5: begin
            state_next = S_WDRAIN;
        end
        S_WDRAIN: begin
            len_next = tnew_reg[AW-1:0] - cstart_reg[AW-1:0];
            if (mv_wr_done) begin
                if (torn_reg) begin
                    poll_cnt_next = 32'd0;
                    state_next = S_IDLE;
                end else if (keep_part_reg && f_ovf_reg) begin
                    fault_next = RM_FAULT_POSITION_LIMIT;
                    fwhere_next = W_WORD;
                    fsel_next = WS_RINT;
                    state_next = S_DRAIN;
                end else if (keep_part_reg && f_grow_reg) begin
                    // a kept partial round: readers of the replica must start at its
                    // first kept partition before the replica's tail claims the round
                    word_wr_next = 1'b1;
                    wsel_next = WS_RINT;
                    word_data_next = rwant_reg;
                    rint_next = rwant_reg;
                    state_next = S_PUB_RINT;
                end else begin
                    word_wr_next = 1'b1;
                    wsel_next = WS_RTAIL;
                    word_data_next = tnew_reg;
                    state_next = S_PUB_REPLICA;
                end
            end
        end
        S_PUB_RINT: begin
            if (word_bad) begin
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = S_DRAIN;
            end else if (word_ok) begin
                word_wr_next = 1'b1;
                wsel_next = WS_RTAIL;
                word_data_next = tnew_reg;
                state_next = S_PUB_REPLICA;
            end
        end
        S_PUB_REPLICA: begin
            if (word_bad) begin
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = S_DRAIN;
            end else if (word_ok) begin
                word_wr_next = 1'b1;
                wsel_next = WS_MIRRORED;
                word_data_next = tnew_reg;
                state_next = S_PUB_RING;
            end
        end
        S_PUB_RING: begin
            if (word_bad) begin
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = S_DRAIN;
            end else if (word_ok) begin
                mirrored_next = tnew_reg;
                start_next = tnew_reg;
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                bytes_next = bytes_reg + {{(64-AW){1'b0}}, len_reg};
                // progress counts at most 4 GiB per round, far above any threshold
                progress_next = prog_hit_reg ? 32'd0 : prog_sum_reg;
                ev_progress_next = prog_hit_reg;
                ev_sync_done_next = sync_round_reg;
                poll_cnt_next = 32'd0;
                state_next = S_IDLE;
            end
        end
        S_DRAIN: begin
            // issue nothing new; wait for every outstanding transaction (a watchdog
            // fault cannot wait: the slave stopped answering)
            if (mv_quiet || fault_reg == RM_FAULT_WATCHDOG) begin
                state_next = S_FINFO1;
            end
        end
        S_FINFO1: begin
            wsel_next = fsel_reg;       // FINFO2 reads the word's address through word_addr
            fpos_next = (fwhere_reg == W_SRC || fwhere_reg == W_DST)
                      ? rbase_reg + ({{(64-BW){1'b0}}, fidx_reg} << LSB) : start_reg;
            state_next = S_FINFO2;
        end
        S_FINFO2: begin
            case (fwhere_reg)
                W_SRC: faddr_next = cfg_ring_base + (fpos_reg[AW-1:0] & cfg_cap_mask);
                W_DST: faddr_next = cfg_replica_base + (fpos_reg[AW-1:0] & cfg_cap_mask);
                W_WORD: faddr_next = word_addr;
                default: faddr_next = {AW{1'b0}};
            endcase
            ev_fault_next = 1'b1;
            state_next = S_FAULT;
        end
        S_FAULT: begin
            if (cfg_soft_reset && mv_quiet) begin
                fault_next = RM_FAULT_NONE;
                fpos_next = 64'd0;
                faddr_next = {AW{1'b0}};
                start_next = 64'd0;
                mirrored_next = 64'd0;
                tail_next = 64'd0;
                bytes_next = 64'd0;
                bursts_next = 64'd0;
                overruns_next = 64'd0;
                lost_next = 64'd0;
                busy_cycles_next = 64'd0;
                progress_next = 32'd0;
                poll_cnt_next = 32'd0;
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                rint_known_next = 1'b0;
                clear_next = 1'b1;
                ev_soft_reset_done_next = 1'b1;
                state_next = S_IDLE;
            end
        end
        default: state_next = S_FAULT;
    endcase

    // a data error or the watchdog, reported by the mover, stops any round; the first
    // fault wins and keeps its details
    if (fault_reg == RM_FAULT_NONE && mv_err) begin
        fault_next = mv_err_code;
        fwhere_next = mv_err_where;
        fidx_next = mv_err_idx;
        fsel_next = wsel_reg;
    end
    // a round stops at once on a mover error (registered there, so this stays short):
    // nothing it would issue in this cycle goes out
    if ((mv_err || fault_reg != RM_FAULT_NONE) && state_reg != S_IDLE
            && state_reg != S_DRAIN && state_reg != S_FINFO1 && state_reg != S_FINFO2
            && state_reg != S_FAULT) begin
        state_next = S_DRAIN;
        word_rd_next = 1'b0;
        word_wr_next = 1'b0;
        copy_go_next = 1'b0;
    end
end

always @(posedge clk) begin
    f_grow_reg <= rwant_reg > rint_reg;
    f_keep_reg <= oldest_reg < tnew_reg;
    f_rw_gt_t_reg <= rwant_reg > tnew_reg;
    prog_sum_reg <= progress_reg + len_reg[31:0];
    prog_hit_reg <= cfg_irq_progress != 32'd0 && prog_sum_reg >= cfg_irq_progress;
    state_reg <= state_next;
    fault_reg <= fault_next;
    fwhere_reg <= fwhere_next;
    fidx_reg <= fidx_next;
    fsel_reg <= fsel_next;
    fpos_reg <= fpos_next;
    faddr_reg <= faddr_next;
    start_reg <= start_next;
    mirrored_reg <= mirrored_next;
    tail_reg <= tail_next;
    tnew_reg <= tnew_next;
    intent_reg <= intent_next;
    cstart_reg <= cstart_next;
    rbase_reg <= rbase_next;
    rint_reg <= rint_next;
    rwant_reg <= rwant_next;
    newest_reg <= newest_next;
    oldest_reg <= oldest_next;
    diff_reg <= diff_next;
    dlost_reg <= dlost_next;
    len_reg <= len_next;
    f_bad_reg <= f_bad_next;
    f_back_reg <= f_back_next;
    f_nothing_reg <= f_nothing_next;
    f_lapped_reg <= f_lapped_next;
    f_ngt_reg <= f_ngt_next;
    f_low_reg <= f_low_next;
    f_borrow_reg <= f_borrow_next;
    f_ovf_reg <= f_ovf_next;
    gap_reg <= gap_next;
    torn_reg <= torn_next;
    keep_part_reg <= keep_part_next;
    torn_run_reg <= torn_run_next;
    rint_known_reg <= rint_known_next;
    sync_round_reg <= sync_round_next;
    poll_cnt_reg <= poll_cnt_next;
    progress_reg <= progress_next;
    bytes_reg <= bytes_next;
    bursts_reg <= bursts_next;
    overruns_reg <= overruns_next;
    lost_reg <= lost_next;
    busy_cycles_reg <= busy_cycles_next;
    ev_sync_done_reg <= ev_sync_done_next;
    ev_soft_reset_done_reg <= ev_soft_reset_done_next;
    ev_fault_reg <= ev_fault_next;
    ev_progress_reg <= ev_progress_next;
    ev_overrun_reg <= ev_overrun_next;
    word_rd_reg <= word_rd_next;
    word_wr_reg <= word_wr_next;
    wsel_reg <= wsel_next;
    word_data_reg <= word_data_next;
    copy_go_reg <= copy_go_next;
    copy_off_reg <= copy_off_next;
    copy_beats_reg <= copy_beats_next;
    first_strb_reg <= first_strb_next;
    last_strb_reg <= last_strb_next;
    clear_reg <= clear_next;

    if (rst) begin
        state_reg <= S_IDLE;
        fault_reg <= RM_FAULT_NONE;
        fwhere_reg <= W_CFG;
        fidx_reg <= 0;
        fsel_reg <= WS_TAIL;
        fpos_reg <= 64'd0;
        faddr_reg <= 0;
        start_reg <= 64'd0;
        mirrored_reg <= 64'd0;
        tail_reg <= 64'd0;
        gap_reg <= 1'b0;
        torn_reg <= 1'b0;
        keep_part_reg <= 1'b0;
        torn_run_reg <= 2'd0;
        rint_known_reg <= 1'b0;
        sync_round_reg <= 1'b0;
        poll_cnt_reg <= 32'd0;
        progress_reg <= 32'd0;
        bytes_reg <= 64'd0;
        bursts_reg <= 64'd0;
        overruns_reg <= 64'd0;
        lost_reg <= 64'd0;
        busy_cycles_reg <= 64'd0;
        ev_sync_done_reg <= 1'b0;
        ev_soft_reset_done_reg <= 1'b0;
        ev_fault_reg <= 1'b0;
        ev_progress_reg <= 1'b0;
        ev_overrun_reg <= 1'b0;
        word_rd_reg <= 1'b0;
        word_wr_reg <= 1'b0;
        copy_go_reg <= 1'b0;
        clear_reg <= 1'b0;
    end
end

rm_mover #(
    .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH),
    .MAX_BURST_LEN(MAX_BURST_LEN), .MAX_OUTSTANDING(MAX_OUTSTANDING),
    .FIFO_DEPTH(FIFO_DEPTH), .AXI_CACHE(AXI_CACHE), .AXI_PROT(AXI_PROT), .BW(BW)
) mover (
    .clk(clk), .rst(rst),
    .src_base(cfg_ring_base), .dst_base(cfg_replica_base), .off_mask(cfg_cap_mask),
    .watchdog(cfg_watchdog),
    .copy_start(copy_go_reg), .copy_off(copy_off_reg), .copy_beats(copy_beats_reg),
    .copy_first_strb(first_strb_reg), .copy_last_strb(last_strb_reg),
    .copy_rd_done(mv_rd_done), .copy_wr_done(mv_wr_done), .burst_issued(mv_burst),
    .word_rd(word_rd_reg), .word_wr(word_wr_reg), .word_addr(word_addr),
    .word_wdata(word_data_reg), .word_done(mv_word_done), .word_rdata(mv_rdata),
    .word_resp(mv_resp), .word_busy(mv_word_busy),
    .abort(fault_reg != RM_FAULT_NONE), .clear(clear_reg),
    .err_valid(mv_err), .err_code(mv_err_code), .err_where(mv_err_where),
    .err_idx(mv_err_idx), .quiet(mv_quiet),
    .m_axi_awid(m_axi_awid), .m_axi_awaddr(m_axi_awaddr), .m_axi_awlen(m_axi_awlen),
    .m_axi_awsize(m_axi_awsize), .m_axi_awburst(m_axi_awburst), .m_axi_awlock(m_axi_awlock),
    .m_axi_awcache(m_axi_awcache), .m_axi_awprot(m_axi_awprot),
    .m_axi_awvalid(m_axi_awvalid), .m_axi_awready(m_axi_awready),
    .m_axi_wdata(m_axi_wdata), .m_axi_wstrb(m_axi_wstrb), .m_axi_wlast(m_axi_wlast),
    .m_axi_wvalid(m_axi_wvalid), .m_axi_wready(m_axi_wready),
    .m_axi_bresp(m_axi_bresp), .m_axi_bvalid(m_axi_bvalid), .m_axi_bready(m_axi_bready),
    .m_axi_arid(m_axi_arid), .m_axi_araddr(m_axi_araddr), .m_axi_arlen(m_axi_arlen),
    .m_axi_arsize(m_axi_arsize), .m_axi_arburst(m_axi_arburst), .m_axi_arlock(m_axi_arlock),
    .m_axi_arcache(m_axi_arcache), .m_axi_arprot(m_axi_arprot),
    .m_axi_arvalid(m_axi_arvalid), .m_axi_arready(m_axi_arready),
    .m_axi_rdata(m_axi_rdata), .m_axi_rresp(m_axi_rresp), .m_axi_rlast(m_axi_rlast),
    .m_axi_rvalid(m_axi_rvalid), .m_axi_rready(m_axi_rready)
);

// ---------------------------------------------------------------- outputs
assign st_busy = state_reg != S_IDLE && state_reg != S_FAULT;
assign st_idle = state_reg == S_IDLE;
assign st_error = state_reg == S_FAULT;
assign st_fault = fault_reg;
assign st_mirrored = mirrored_reg;
assign st_tail = tail_reg;
assign st_bytes = bytes_reg;
assign st_bursts = bursts_reg;
assign st_overruns = overruns_reg;
assign st_bytes_lost = lost_reg;
assign st_busy_cycles = busy_cycles_reg;
assign st_fault_addr = {{(64-AW){1'b0}}, faddr_reg};
assign st_fault_pos = fpos_reg;
assign ev_sync_done = ev_sync_done_reg;
assign ev_soft_reset_done = ev_soft_reset_done_reg;
assign ev_fault = ev_fault_reg;
assign ev_progress = ev_progress_reg;
assign ev_overrun = ev_overrun_reg;

endmodule

`resetall
