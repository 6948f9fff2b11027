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
//      tail intent to b + capacity - partition + 1), (with CRC_CONFIG.ENABLE, once every
//      CRC-table entry of the round is acknowledged too, write t to the table's
//      table_tail word), write t to the replica's tail word, then to the ring's mirrored
//      word. The CRC unit and the entry writes are rm_mover's (rm_crc_table).
//
// Datapath (time-multiplexed): the 64-bit positions and counters live in a 16-entry
// position file (LUT RAM with a registered read, `a_op_reg`), and one 64-bit
// add/subtract unit computes res = A + (B or ~B) + carry-in, with A one of a few sources
// (the position file's read data, the word just read from the bus, MIRRORED as loaded, an
// address) and B the accumulator `acc_reg` or a configuration constant. Each state does
// at most one such operation, and its result goes to the accumulator, to one entry of the
// file, or to a flag (borrow = A < B). The round is a sequence of these steps: about 70
// cycles of control instead of twenty 64-bit registers with their select logic; the data
// beats are untouched by it. An entry is never read in the cycle it is written (the read
// would see the old value); the sequence waits a cycle where it needs the new one.
// Positions are compared, never wrapped: offsets within a round are round-relative
// (rm_mover), so a tail at 2^64 - 8 copies like any other; a resynchronisation whose
// replica tail intent would pass 2^64 - 1 stops with POSITION_LIMIT instead of wrapping.
//
// The register file reads MIRRORED, TAIL_SEEN, the counters and the fault details through
// a second read port of the position file (st_addr in, st_value a cycle later).
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
    parameter RUN_LOG = 16,             // a round copies in runs of at most 2^RUN_LOG beats
    parameter CRC_TABLE = 1,            // 1: the replica CRC table unit (rm_crc_table)
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
    input  wire                    cfg_crc_enable,    // keep the replica's CRC table
    input  wire                    cfg_crc_seed_load, // pulse: the CRC the next round continues
    input  wire [31:0]             cfg_crc_seed,
    output wire [31:0]             st_crc_partial,
    output wire [31:0]             st_crc_blocks,

    // status and events (to the register file)
    output wire                    st_busy,
    output wire                    st_idle,
    output wire                    st_error,          // stopped on a fault
    output wire                    st_clearing,       // the position file is being cleared
                                                      // or loaded (the register file
                                                      // holds the bus meanwhile)
    output wire [7:0]              st_fault,
    input  wire [7:0]              st_addr,           // register offset of a 64-bit status value
    output wire [63:0]             st_value,          // its value, one cycle after st_addr
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
localparam BT = AW - LSB + 1;                       // beats of a round
// A round copies in runs of at most 2^RUN_LOG beats (one rm_mover copy each, the next
// started once the previous one's writes are acknowledged): the mover's and the burst
// planners' beat counters need RUN_LOG + 1 bits instead of BT. With 2^16 beats a run
// boundary (one memory latency) costs under 0.1 % of a long copy.
localparam BW = RUN_LOG + 1;
localparam [BT-1:0] RUN_BEATS = {{(BT-1){1'b0}}, 1'b1} << RUN_LOG;
localparam [AW-1:0] RUN_BYTES = {{(AW-1){1'b0}}, 1'b1} << (RUN_LOG + LSB);
localparam [BYTES-1:0] STRB_ALL = {BYTES{1'b1}};
localparam [AW-1:0] BEAT_ALIGN = {{(AW-LSB){1'b1}}, {LSB{1'b0}}};

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
    if (RUN_LOG < 8 || RUN_LOG > 24) begin
        // (rm_mover and rm_burst_plan count at least 9-bit beat numbers: bursts of 256)
        $error("ring_mirror_core: RUN_LOG (%0d) must be 8..24", RUN_LOG);
        $finish;
    end
    if (FIFO_DEPTH < MAX_BURST_LEN || FIFO_DEPTH > 16384
            || (FIFO_DEPTH & (FIFO_DEPTH - 1)) != 0) begin
        $error("ring_mirror_core: FIFO_DEPTH (%0d) must be a power of two, MAX_BURST_LEN..16384",
               FIFO_DEPTH);
        $finish;
    end
end

// ---------------------------------------------------------------- position file entries
localparam [3:0]
    E_START = 4'd0,       // first position of the next round
    E_MIRRORED = 4'd1,    // last published position (MIRRORED)
    E_TAIL = 4'd2,        // tail seen by the latest poll (TAIL_SEEN)
    E_TNEW = 4'd3,        // this round's end
    E_CSTART = 4'd4,      // first position kept by this round
    E_OLDEST = 4'd5,      // first intact partition start
    E_NEWEST = 4'd6,      // partition start below a position
    E_INTENT = 4'd7,      // tail intent read after the copy
    E_RINT = 4'd8,        // what the replica's tail intent holds
    E_RWANT = 4'd9,       // replica tail intent this round needs
    E_LOST = 4'd10,       // BYTES_LOST
    E_BYTES = 4'd11,      // BYTES_COPIED
    E_OVERRUNS = 4'd12,   // OVERRUNS
    E_FPOS = 4'd13,       // FAULT_POSITION
    E_FADDR = 4'd14,      // FAULT_ADDR
    E_RBASE = 4'd15;      // beat-aligned position of the run's beat 0

// ---------------------------------------------------------------- states
localparam
    S_IDLE = 0,
    S_CLEAR = 1,       // zero every entry (reset, SOFT_RESET)
    S_LOAD1 = 2,       // MIRRORED load: start, mirrored, tail
    S_LOAD2 = 3,
    S_LOAD3 = 4,
    S_TAIL_R = 5,      // tail word read
    S_T1 = 6,          // acc = tail seen before
    S_T2 = 7,          // t < tail seen? (TAIL_BACKWARDS)
    S_T3 = 8,          // tail seen = t; acc = t
    S_T4 = 9,          // t <= start? (nothing new)
    S_T5 = 10,         // acc = start
    S_T6 = 11,         // acc = t - start
    S_T7 = 12,         // tnew = t; lapped = acc > capacity
    S_T8 = 13,         // newest = (t - 8) & ~(partition - 1); acc = newest
    S_T9 = 14,         // newest > start?
    S_T10 = 15,        // oldest = newest - (capacity - partition); checks
    S_T11 = 16,        // read the copy start chosen
    S_P1 = 17,         // cstart = chosen; acc = cstart; run geometry
    S_P2 = 18,         // rbase = cstart & ~(BYTES - 1)
    S_P3 = 19,         // acc = start - cstart
    S_P4 = 20,         // lost += cstart - start
    S_P5 = 21,         // overruns += 1 (lapped or catch-up)
    S_P7 = 22,         // rwant = cstart + capacity - partition + 1 (carry: past 2^64-1)
    S_P8 = 23,         // acc = cstart
    S_P9 = 24,         // len = tnew - cstart
    S_P10 = 25,        // acc = rwant; run length in beats
    S_P11 = 26,        // tnew < rwant?
    S_P12 = 27,        // rwant = tnew unless resynchronised past it; replica intent known?
    S_RINT_R = 28,     // replica tail-intent read (first round after a (re)start)
    S_RC1 = 29,        // rwant > rint? (three steps)
    S_RC2 = 30,
    S_RC3 = 31,
    S_RINT_W = 32,     // raise the replica tail intent, start the copy
    S_COPY = 33,       // until the last read beat
    S_INTENT_R = 34,   // tail intent read
    S_I1 = 35,         // acc = tnew
    S_I2 = 36,         // i < tnew? (BAD_INTENT)
    S_I3 = 37,         // acc = cstart
    S_I4 = 38,         // acc = i - cstart
    S_I5 = 39,         // intent = i; lapped during the copy = acc > capacity
    S_I6 = 40,         // newest = (i - 8) & ~(partition - 1)
    S_I7 = 41,         // (newest written)
    S_I8 = 42,         // oldest = newest - (capacity - partition); checks
    S_TAIL2_R = 43,    // second tail read (after an overrun)
    S_U1 = 44,         // acc = tnew
    S_U2 = 45,         // t2 < tnew? (TAIL_BACKWARDS)
    S_U3 = 46,         // tail seen = t2; acc = t2
    S_U4 = 47,         // i < t2?; acc = i - t2
    S_U5 = 48,         // hostile intent? overruns += 1
    S_U6 = 49,         // acc = cstart
    S_U7 = 50,         // acc = oldest - cstart
    S_U8 = 51,         // lost += acc
    S_U9 = 52,         // acc = tnew
    S_U10 = 53,        // oldest < tnew? (keep the intact part)
    S_U11 = 54,        // cstart = oldest (keep) or start = oldest (torn)
    S_U12 = 55,        // rwant = oldest + capacity - partition + 1
    S_WD1 = 56,        // len = tnew - cstart (three steps)
    S_WD2 = 57,
    S_WD3 = 58,
    S_WDRAIN = 59,     // until every data write is acknowledged
    S_PUB_RINT = 60,
    S_PUB_REPLICA = 61,
    S_PUB_RING = 62,
    S_F1 = 63,         // mirrored = tnew
    S_F2 = 64,         // bytes += len
    S_F3 = 65,         // start = tnew
    S_DRAIN = 66,      // a fault: let the bus go quiet
    S_X1 = 67,         // fault details: read the run base or the start
    S_X2 = 68,         // word/configuration fault: fault position = start
    S_X3 = 69,         // word/configuration fault: fault address = the word's or 0
    S_X4 = 70,         // data fault: acc = rbase
    S_X5 = 71,         // fault position = rbase + beat * BYTES; acc = it
    S_X6 = 72,         // acc &= capacity - 1
    S_X7 = 73,         // fault address = data base + acc
    S_X8 = 74,         // report
    S_FAULT = 75,
    S_NR1 = 76,        // next run: wait for the previous run's write responses
    S_NR2 = 77,        // start it; acc = rbase
    S_NR3 = 78,        // rbase += run bytes
    S_RINT_R2 = 79,    // rint = the word read
    S_F0 = 80,         // acc = len
    S_PUB_TTAIL = 81,  // the CRC table's table_tail (CRC_CONFIG.ENABLE)
    S_U4B = 82,        // (acc_gt_cap of i - t2 registered)
    S_LOAD0 = 83;      // MIRRORED load: operand select (a_sel_reg) set for LOAD1-3

localparam [1:0] W_WORD = 2'd0, W_SRC = 2'd1, W_DST = 2'd2, W_CFG = 2'd3;
// header words, by a 3-bit selector: the 40-bit address mux sits after a register
localparam [2:0] WS_TAIL = 3'd0, WS_INTENT = 3'd1, WS_RINT = 3'd2, WS_RTAIL = 3'd3,
                 WS_MIRRORED = 3'd4, WS_TTAIL = 3'd5;

// ALU operand selects
localparam [3:0] A_POS = 4'd0, A_WORD = 4'd1, A_LOADV = 4'd2, A_ZERO = 4'd3, A_BEAT = 4'd4,
                 A_RING = 4'd5, A_REPLICA = 4'd6, A_WADDR = 4'd7, A_CLP = 4'd8,
                 A_NCLP = 4'd9, A_LEN = 4'd10, A_RUN = 4'd11;
localparam [1:0] M_NONE = 2'd0, M_PART = 2'd1, M_CAP = 2'd2, M_BEAT = 2'd3;

// ---------------------------------------------------------------- mover
wire mv_rd_done, mv_wr_done, mv_burst, mv_word_done, mv_word_busy, mv_err, mv_quiet;
wire [63:0] mv_rdata;
wire [1:0] mv_resp;
wire [7:0] mv_err_code;
wire [1:0] mv_err_where;
wire [ADDR_WIDTH-1:0] mv_crc_tail_addr;
wire [BW-1:0] mv_err_idx;

// ---------------------------------------------------------------- state
// one-hot: each state's decode is one flip-flop, so the controls it drives are ORs
localparam NS = 84;
localparam [NS-1:0] ST1 = {{(NS-1){1'b0}}, 1'b1};
reg [NS-1:0] state_reg, state_next;
reg [NS-1:0] state_pre;                      // state_next before a fault's override
reg [7:0] fault_reg, fault_next;
// the mover's `abort` (fault_reg != NONE), registered from the next fault code: the same
// value in the same cycle, but its wide fanout in the mover (the AR issue, the entry queue,
// W's hold and strobes, the CRC table's drop) starts at a flip-flop of its own, placed by
// its loads, instead of the 8-bit OR behind fault_reg (which the status read and the round
// pull toward the controller). keep: Yosys would otherwise merge it with that OR.
// Built with the CRC table only (the base mirror meets its clock without it, and the copy
// costs it about 90 LUT4 of its budget).
(* keep *) reg mv_abort_reg;
reg [1:0] fwhere_reg, fwhere_next;
/* verilator lint_off UNUSEDSIGNAL */
/* verilator lint_off UNUSEDSIGNAL */
reg [BW-1:0] fidx_reg, fidx_next;            // beat index of a data fault (< 2^RUN_LOG)
/* verilator lint_on UNUSEDSIGNAL */
/* verilator lint_on UNUSEDSIGNAL */
reg [2:0] fsel_reg, fsel_next;               // header word of a word-level fault

// position file and the arithmetic unit
reg [63:0] pos_mem [0:15];
reg [63:0] a_op_reg;                         // operand A, selected in the previous cycle
reg [63:0] acc_reg, acc_next;
reg [3:0] ra_pre;                            // entry the state being entered reads
reg [3:0] ra_reg;                            // that entry, registered (a_op_reg next)
reg [3:0] wa;
reg we;
reg acc_we;
reg [3:0] a_sel_pre;                         // operand select of the state being entered
reg [3:0] a_sel_reg;                         // registered: the select is a flip-flop
reg b_en, b_en_next;                         // B = acc (else 0)
reg b_inv, b_inv_next;                       // B inverted (with cin: A - acc; alone: A - 1)
reg cin, cin_next;                           // carry in
reg [1:0] m_sel, m_sel_next;
reg [3:0] clr_cnt_reg, clr_cnt_next;
reg clr_ev_reg, clr_ev_next;                 // the clear was a SOFT_RESET (report it)

reg [AW-1:0] len_reg, len_next;              // bytes of the round (<= capacity <= 2^(AW-1))
reg [LSB-1:0] clow_reg, clow_next;           // cstart within its beat
reg [LSB-1:0] tlow_reg, tlow_next;           // tnew within its beat

reg f_bad_reg, f_bad_next;
reg f_back_reg, f_back_next;
reg f_nothing_reg, f_nothing_next;
reg f_lapped_reg, f_lapped_next;
reg f_ngt_reg, f_ngt_next;                   // newest partition above the start
reg f_low_reg, f_low_next;                   // intent below tail
reg f_borrow_reg, f_borrow_next;             // second tail above the intent
reg f_ovf_reg, f_ovf_next;                   // rwant passed 2^64 - 1
reg f_grow_reg, f_grow_next;                 // rwant > rint
reg f_keep_reg, f_keep_next;                 // oldest < tnew
reg f_rw_gt_t_reg, f_rw_gt_t_next;           // rwant > tnew
reg f_over_reg, f_over_next;                 // this round starts with an overrun
reg [31:0] prog_sum_reg;                     // progress + len
reg prog_hit_reg;                            // that reaches IRQ_PROGRESS
reg gap_reg, gap_next;                       // resynchronised since the last publish
reg torn_reg, torn_next;                     // this round keeps nothing
reg keep_part_reg, keep_part_next;           // this round keeps only its intact part
reg [1:0] torn_run_reg, torn_run_next;       // rounds in a row that kept nothing
reg rint_known_reg, rint_known_next;
reg sync_round_reg, sync_round_next;
// The poll wait: the round's states only say what happens to the count (zero it, load
// the interval, count down), and the count and its "not zero" flag follow from those three
// in one place: zeroing is the flip-flops' synchronous reset and loading or counting their
// enable, instead of a 32-bit select behind every state that touched the count (about 140
// LUT4). The flag is set where the count is (0, the interval's own zero test, or the
// count's != 1), so no 32-bit zero test of the next count sits behind the round's
// completion.
reg [31:0] poll_cnt_reg, poll_cnt_next;
reg poll_wait_reg, poll_wait_next;           // poll_cnt_reg != 0
reg poll_zero, poll_load, poll_dec;
reg [31:0] progress_reg, progress_next;
reg [63:0] bursts_reg;
reg [63:0] busy_cycles_reg;
reg cnt_clear;                               // zero the two free-running counters

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
reg [BT-1:0] rem_reg, rem_next;               // beats of the round not in a run yet
reg run_first_reg, run_first_next;           // the run starts the round (first strobes)
reg run_last_reg, run_last_next;             // the run ends the round (last strobes)
reg clear_reg, clear_next;

reg [AW-1:0] word_addr;
always @* begin
    case (wsel_reg)
        WS_INTENT: word_addr = cfg_intent_addr;
        WS_RINT: word_addr = cfg_rint_addr;
        WS_RTAIL: word_addr = cfg_replica_tail_addr;
        WS_MIRRORED: word_addr = cfg_mirrored_addr;
        WS_TTAIL: word_addr = mv_crc_tail_addr;
        default: word_addr = cfg_tail_addr;
    endcase
end

// ---------------------------------------------------------------- the arithmetic unit
function [63:0] ext(input [AW-1:0] x);
    begin
        ext = 64'd0;
        ext[AW-1:0] = x;
    end
endfunction

reg [63:0] a_next;
always @* begin
    case (a_sel_reg)
        A_POS: a_next = pos_mem[ra_reg];
        A_WORD: a_next = mv_rdata;
        A_LOADV: a_next = cfg_mirrored_value;
        A_BEAT: a_next = ext({{(AW-RUN_LOG-LSB){1'b0}}, fidx_reg[BW-2:0], {LSB{1'b0}}});
        A_RING: a_next = ext(cfg_ring_base);
        A_REPLICA: a_next = ext(cfg_replica_base);
        A_WADDR: a_next = ext(word_addr);
        A_CLP: a_next = ext(cfg_cap_less_part);
        A_NCLP: a_next = ~ext(cfg_cap_less_part);
        A_LEN: a_next = ext(len_reg);
        A_RUN: a_next = ext(RUN_BYTES);
        default: a_next = 64'd0;
    endcase
end
wire [63:0] alu_b = (b_en ? acc_reg : 64'd0) ^ {64{b_inv}};
wire [64:0] alu_sum = {1'b0, a_op_reg} + {1'b0, alu_b} + {64'd0, cin};
wire alu_carry = alu_sum[64];
wire alu_borrow = !alu_carry;                // A - acc: A < acc
reg [63:0] res;
always @* begin
    case (m_sel)
        M_PART: res = alu_sum[63:0] & ~ext(cfg_part_mask);
        M_CAP: res = alu_sum[63:0] & ext(cfg_cap_mask);
        M_BEAT: res = alu_sum[63:0] & ~((64'd1 << LSB) - 64'd1);
        default: res = alu_sum[63:0];
    endcase
end
// the accumulator holds a position difference beyond the capacity (unsigned)
// registered (gtcap_reg: the accumulator of the previous cycle), so that the 64-bit
// comparison feeds only a flip-flop, not the state and position-file write decisions
wire acc_gt_cap = (AW < 64 && |(acc_reg >> AW)) || acc_reg[AW-1:0] > cfg_capacity;
reg gtcap_reg;

// ---------------------------------------------------------------- control
wire sync_req = cfg_sync && !ev_sync_done_reg;
// registered too (its inputs are final in S_T10, it is used in S_T11): the 40-bit
// capacity - partition != 0 stays off the position file's read address
wire catch_up_now = torn_run_reg == 2'd2 && (f_lapped_reg ? clp_nz_reg : f_ngt_reg);
reg clp_nz_reg;                              // capacity - partition != 0 (configuration)
reg catch_up_reg;
wire word_ok = mv_word_done && !mv_resp[1];
wire word_bad = mv_word_done && mv_resp[1];
wire [7:0] word_rd_fault = mv_resp == 2'b11 ? RM_FAULT_READ_DECERR : RM_FAULT_READ_SLVERR;
wire [7:0] word_wr_fault = mv_resp == 2'b11 ? RM_FAULT_WRITE_DECERR : RM_FAULT_WRITE_SLVERR;
/* verilator lint_off UNUSEDSIGNAL */
wire [AW-1:0] beats_sum = len_reg + {{(AW-LSB){1'b0}}, clow_reg}
                        + {{(AW-LSB){1'b0}}, {LSB{1'b1}}};
/* verilator lint_on UNUSEDSIGNAL */
// states a mover error or a fault interrupts (the publish steps after the last
// acknowledged write, the fault report and the idle/clear/load states are not)
wire in_round = |state_reg[S_PUB_RING:S_TAIL_R] || state_reg[S_NR1] || state_reg[S_NR2]
              || state_reg[S_NR3] || state_reg[S_RINT_R2] || state_reg[S_PUB_TTAIL]
              || state_reg[S_U4B];
wire run_small = rem_reg <= RUN_BEATS;

always @* begin
    state_next = state_reg;
    fault_next = fault_reg;
    fwhere_next = fwhere_reg;
    fidx_next = fidx_reg;
    fsel_next = fsel_reg;
    acc_next = acc_reg;
    clr_cnt_next = clr_cnt_reg;
    clr_ev_next = clr_ev_reg;
    len_next = len_reg;
    clow_next = clow_reg;
    tlow_next = tlow_reg;
    f_bad_next = f_bad_reg;
    f_back_next = f_back_reg;
    f_nothing_next = f_nothing_reg;
    f_lapped_next = f_lapped_reg;
    f_ngt_next = f_ngt_reg;
    f_low_next = f_low_reg;
    f_borrow_next = f_borrow_reg;
    f_ovf_next = f_ovf_reg;
    f_grow_next = f_grow_reg;
    f_keep_next = f_keep_reg;
    f_rw_gt_t_next = f_rw_gt_t_reg;
    f_over_next = f_over_reg;
    gap_next = gap_reg;
    torn_next = torn_reg;
    keep_part_next = keep_part_reg;
    torn_run_next = torn_run_reg;
    rint_known_next = rint_known_reg;
    sync_round_next = sync_round_reg;
    poll_zero = 1'b0;
    poll_load = 1'b0;
    poll_dec = 1'b0;
    progress_next = progress_reg;
    cnt_clear = 1'b0;
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
    rem_next = rem_reg;
    run_first_next = run_first_reg;
    run_last_next = run_last_reg;
    first_strb_next = first_strb_reg;
    last_strb_next = last_strb_reg;
    clear_next = 1'b0;

    // datapath defaults: compute nothing that lands anywhere (the entry each state reads
    // is ra_pre's, below)
    wa = E_START;
    we = 1'b0;
    acc_we = 1'b0;

    (* parallel_case *)
    case (1'b1)
        state_reg[S_IDLE]: begin
            if (cfg_soft_reset) begin
                // (the cycle after the clear the request is still seen: nothing to do)
                if (!ev_soft_reset_done_reg) state_next = ST1 << S_CLEAR;
                cnt_clear = 1'b1;
                progress_next = 32'd0;
                poll_zero = 1'b1;
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                rint_known_next = 1'b0;
                clr_cnt_next = 4'd0;
                clr_ev_next = 1'b1;
            end else if (cfg_mirrored_load) begin
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                rint_known_next = 1'b0;
                state_next = ST1 << S_LOAD0;
            end else if (cfg_enable || sync_req) begin
                if (poll_wait_reg && !sync_req) begin
                    poll_dec = 1'b1;
                end else if (!cfg_ready) begin
                    // configuration written within the last cycles: wait for its check
                end else if (cfg_fault != RM_FAULT_NONE) begin
                    fault_next = cfg_fault;
                    fwhere_next = W_CFG;
                    state_next = ST1 << S_DRAIN;
                end else begin
                    word_rd_next = 1'b1;
                    wsel_next = WS_TAIL;
                    sync_round_next = sync_req;
                    torn_next = 1'b0;
                    keep_part_next = 1'b0;
                    state_next = ST1 << S_TAIL_R;
                end
            end
        end
        state_reg[S_CLEAR]: begin
            wa = clr_cnt_reg;
            we = 1'b1;
            clr_cnt_next = clr_cnt_reg + 4'd1;
            if (clr_cnt_reg == 4'd15) begin
                ev_soft_reset_done_next = clr_ev_reg;
                clr_ev_next = 1'b0;
                state_next = ST1 << S_IDLE;
            end
        end
        state_reg[S_LOAD0]: state_next = ST1 << S_LOAD1;
        state_reg[S_LOAD1]: begin
            wa = E_START;
            we = 1'b1;
            state_next = ST1 << S_LOAD2;
        end
        state_reg[S_LOAD2]: begin
            wa = E_MIRRORED;
            we = 1'b1;
            state_next = ST1 << S_LOAD3;
        end
        state_reg[S_LOAD3]: begin
            wa = E_TAIL;
            we = 1'b1;
            state_next = ST1 << S_IDLE;
        end
        // ------------------------------------------------ poll and plan
        state_reg[S_TAIL_R]: begin
            if (word_bad) begin
                fault_next = word_rd_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (mv_word_done) begin
                state_next = ST1 << S_T1;
            end
        end
        state_reg[S_T1]: begin
            // acc = tail seen before
            acc_we = 1'b1;
            f_bad_next = mv_rdata[2:0] != 3'd0;
            state_next = ST1 << S_T2;
        end
        state_reg[S_T2]: begin
            f_back_next = alu_borrow;
            state_next = ST1 << S_T3;
        end
        state_reg[S_T3]: begin
            // a_op_reg = start from here to T5
            wa = E_TAIL;
            we = 1'b1;
            acc_we = 1'b1;
            state_next = ST1 << S_T4;
        end
        state_reg[S_T4]: begin
            f_nothing_next = !alu_borrow;      // start >= t
            state_next = ST1 << S_T5;
        end
        state_reg[S_T5]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_T6;
        end
        state_reg[S_T6]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_T7;
        end
        state_reg[S_T7]: begin
            wa = E_TNEW;
            we = 1'b1;
            tlow_next = mv_rdata[LSB-1:0];
            state_next = ST1 << S_T8;
        end
        state_reg[S_T8]: begin
            // gtcap_reg: t - start (the accumulator in S_T7) > capacity
            f_lapped_next = gtcap_reg;
            wa = E_NEWEST;
            we = 1'b1;
            acc_we = 1'b1;
            state_next = ST1 << S_T9;
        end
        state_reg[S_T9]: begin
            // start - newest borrows: newest > start
            f_ngt_next = alu_borrow;
            state_next = ST1 << S_T10;
        end
        state_reg[S_T10]: begin
            wa = E_OLDEST;
            we = 1'b1;
            if (f_bad_reg || f_back_reg) begin
                fault_next = f_bad_reg ? RM_FAULT_BAD_TAIL : RM_FAULT_TAIL_BACKWARDS;
                fwhere_next = W_WORD;
                fsel_next = WS_TAIL;
                state_next = ST1 << S_DRAIN;
            end else if (f_nothing_reg) begin
                // nothing new: a one-shot sync is complete, continuous mode waits a while
                ev_sync_done_next = sync_round_reg;
                poll_load = 1'b1;
                state_next = ST1 << S_IDLE;
            end else begin
                state_next = ST1 << S_T11;
            end
        end
        state_reg[S_T11]: begin
            // the copy start: the newest partition after two torn rounds (docs/hw.md,
            // "Catch-up"), the oldest intact one when lapped, else where the last ended
            f_over_next = f_lapped_reg || catch_up_reg;
            if (f_lapped_reg || catch_up_reg) begin
                ev_overrun_next = 1'b1;
                gap_next = 1'b1;
            end
            state_next = ST1 << S_P1;
        end
        state_reg[S_P1]: begin
            wa = E_CSTART;
            we = 1'b1;
            acc_we = 1'b1;
            clow_next = a_op_reg[LSB-1:0];
            copy_off_next = a_op_reg[AW-1:0] & cfg_cap_mask & BEAT_ALIGN;
            first_strb_next = STRB_ALL << a_op_reg[LSB-1:0];
            state_next = ST1 << S_P2;
        end
        state_reg[S_P2]: begin
            wa = E_RBASE;
            we = 1'b1;
            state_next = ST1 << S_P3;
        end
        state_reg[S_P3]: begin
            // acc = start - cstart, so lost - acc = lost + (cstart - start)
            acc_we = 1'b1;
            state_next = ST1 << S_P4;
        end
        state_reg[S_P4]: begin
            wa = E_LOST;
            we = 1'b1;
            state_next = f_over_reg ? ST1 << S_P5 : ST1 << S_P8;
        end
        state_reg[S_P5]: begin
            wa = E_OVERRUNS;
            we = 1'b1;
            state_next = ST1 << S_P8;
        end
        state_reg[S_P8]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_P7;
        end
        state_reg[S_P7]: begin
            wa = E_RWANT;
            we = 1'b1;
            f_ovf_next = alu_carry;
            state_next = ST1 << S_P9;
        end
        state_reg[S_P9]: begin
            len_next = res[AW-1:0];
            state_next = ST1 << S_P10;
        end
        state_reg[S_P10]: begin
            acc_we = 1'b1;
            rem_next = {1'b0, beats_sum[AW-1:LSB]};
            last_strb_next = tlow_reg == 0 ? STRB_ALL
                           : STRB_ALL >> (BYTES[LSB:0] - {1'b0, tlow_reg});
            state_next = ST1 << S_P11;
        end
        state_reg[S_P11]: begin
            f_rw_gt_t_next = alu_borrow;       // tnew < rwant
            state_next = ST1 << S_P12;
        end
        state_reg[S_P12]: begin
            // replica readers must start at cstart after a resynchronisation
            wa = E_RWANT;
            we = !(gap_reg && f_rw_gt_t_reg);
            if (gap_reg && f_ovf_reg) begin
                we = 1'b0;
                fault_next = RM_FAULT_POSITION_LIMIT;
                fwhere_next = W_WORD;
                fsel_next = WS_RINT;
                state_next = ST1 << S_DRAIN;
            end else if (rint_known_reg) begin
                state_next = ST1 << S_RC1;
            end else begin
                // first round since (re)start: "only if it grows" needs the current value
                word_rd_next = 1'b1;
                wsel_next = WS_RINT;
                state_next = ST1 << S_RINT_R;
            end
        end
        state_reg[S_RINT_R]: begin
            if (word_bad) begin
                fault_next = word_rd_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (mv_word_done) begin
                rint_known_next = 1'b1;
                state_next = ST1 << S_RINT_R2;
            end
        end
        state_reg[S_RINT_R2]: begin
            wa = E_RINT;
            we = 1'b1;
            state_next = ST1 << S_RC2;
        end
        state_reg[S_RC1]: begin
            state_next = ST1 << S_RC2;
        end
        state_reg[S_RC2]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_RC3;
        end
        state_reg[S_RC3]: begin
            f_grow_next = alu_borrow;          // rint < rwant
            state_next = keep_part_reg ? ST1 << S_WD1 : ST1 << S_RINT_W;
        end
        state_reg[S_RINT_W]: begin
            // the mover holds data writes back until this word write is acknowledged;
            // the reads of the run start at once
            wa = E_RINT;
            if (f_grow_reg) begin
                we = 1'b1;
                word_wr_next = 1'b1;
                wsel_next = WS_RINT;
                word_data_next = res;
            end
            copy_go_next = 1'b1;
            run_first_next = 1'b1;
            if (run_small) begin
                copy_beats_next = rem_reg[BW-1:0];
                rem_next = {BT{1'b0}};
                run_last_next = 1'b1;
            end else begin
                copy_beats_next = RUN_BEATS[BW-1:0];
                rem_next = rem_reg - RUN_BEATS;
                run_last_next = 1'b0;
            end
            state_next = ST1 << S_COPY;
        end
        state_reg[S_NR1]: begin
            if (mv_wr_done) state_next = ST1 << S_NR2;
        end
        state_reg[S_NR2]: begin
            // beat 0 of the next run: RUN_BEATS beats further, at the ring's wrap too
            acc_we = 1'b1;
            copy_off_next = (copy_off_reg + RUN_BYTES) & cfg_cap_mask;
            copy_go_next = 1'b1;
            run_first_next = 1'b0;
            if (run_small) begin
                copy_beats_next = rem_reg[BW-1:0];
                rem_next = {BT{1'b0}};
                run_last_next = 1'b1;
            end else begin
                copy_beats_next = RUN_BEATS[BW-1:0];
                rem_next = rem_reg - RUN_BEATS;
                run_last_next = 1'b0;
            end
            state_next = ST1 << S_NR3;
        end
        state_reg[S_NR3]: begin
            wa = E_RBASE;
            we = 1'b1;
            state_next = ST1 << S_COPY;
        end
        state_reg[S_COPY]: begin
            if (word_bad) begin
                // the replica tail-intent write failed
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (mv_rd_done && !copy_go_reg && !mv_word_busy && rem_reg != 0) begin
                state_next = ST1 << S_NR1;
            end else if (mv_rd_done && !copy_go_reg && !mv_word_busy) begin
                // every data beat has arrived: now tail intent proves the copy intact
                word_rd_next = 1'b1;
                wsel_next = WS_INTENT;
                state_next = ST1 << S_INTENT_R;
            end
        end
        // ------------------------------------------------ after the copy
        state_reg[S_INTENT_R]: begin
            if (word_bad) begin
                fault_next = word_rd_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (mv_word_done) begin
                state_next = ST1 << S_I1;
            end
        end
        state_reg[S_I1]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_I2;
        end
        state_reg[S_I2]: begin
            f_low_next = alu_borrow;           // i < tnew
            state_next = ST1 << S_I3;
        end
        state_reg[S_I3]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_I4;
        end
        state_reg[S_I4]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_I5;
        end
        state_reg[S_I5]: begin
            wa = E_INTENT;
            we = 1'b1;
            state_next = ST1 << S_I6;
        end
        state_reg[S_I6]: begin
            // gtcap_reg: i - cstart (the accumulator in S_I5) > capacity
            f_lapped_next = gtcap_reg;
            wa = E_NEWEST;
            we = 1'b1;
            acc_we = 1'b1;
            state_next = ST1 << S_I7;
        end
        state_reg[S_I7]: begin
            state_next = ST1 << S_I8;
        end
        state_reg[S_I8]: begin
            wa = E_OLDEST;
            we = 1'b1;
            if (f_low_reg) begin
                fault_next = RM_FAULT_BAD_INTENT;
                fwhere_next = W_WORD;
                fsel_next = WS_INTENT;
                state_next = ST1 << S_DRAIN;
            end else if (!f_lapped_reg) begin
                state_next = ST1 << S_WD1;
            end else begin
                // bytes may have been overwritten while read; first make sure the intent
                // is one a producer can have written: read the tail again
                word_rd_next = 1'b1;
                wsel_next = WS_TAIL;
                state_next = ST1 << S_TAIL2_R;
            end
        end
        state_reg[S_TAIL2_R]: begin
            if (word_bad) begin
                fault_next = word_rd_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (mv_word_done) begin
                state_next = ST1 << S_U1;
            end
        end
        state_reg[S_U1]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_U2;
        end
        state_reg[S_U2]: begin
            f_back_next = alu_borrow;          // t2 < tnew
            state_next = ST1 << S_U3;
        end
        state_reg[S_U3]: begin
            wa = E_TAIL;
            we = 1'b1;
            acc_we = 1'b1;
            state_next = ST1 << S_U4;
        end
        state_reg[S_U4]: begin
            f_borrow_next = alu_borrow;        // intent < t2
            acc_we = 1'b1;
            state_next = ST1 << S_U4B;
        end
        state_reg[S_U4B]: begin
            state_next = ST1 << S_U5;
        end
        state_reg[S_U5]: begin
            if (f_back_reg) begin
                fault_next = RM_FAULT_TAIL_BACKWARDS;
                fwhere_next = W_WORD;
                fsel_next = WS_TAIL;
                state_next = ST1 << S_DRAIN;
            end else if (!f_borrow_reg && gtcap_reg) begin   // i - t2 > capacity
                // a producer never has more than a capacity uncommitted
                fault_next = RM_FAULT_INTENT_RANGE;
                fwhere_next = W_WORD;
                fsel_next = WS_INTENT;
                state_next = ST1 << S_DRAIN;
            end else begin
                // lapped during the copy: bytes below intent - capacity may be torn,
                // those from the next partition start on were read intact
                wa = E_OVERRUNS;
                we = 1'b1;
                ev_overrun_next = 1'b1;
                gap_next = 1'b1;
                state_next = ST1 << S_U6;
            end
        end
        state_reg[S_U6]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_U7;
        end
        state_reg[S_U7]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_U8;
        end
        state_reg[S_U8]: begin
            wa = E_LOST;
            we = 1'b1;
            state_next = ST1 << S_U9;
        end
        state_reg[S_U9]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_U10;
        end
        state_reg[S_U10]: begin
            f_keep_next = alu_borrow;          // oldest < tnew
            state_next = ST1 << S_U11;
        end
        state_reg[S_U11]: begin
            we = 1'b1;
            acc_we = 1'b1;
            if (f_keep_reg) begin
                wa = E_CSTART;
                keep_part_next = 1'b1;
                state_next = ST1 << S_U12;
            end else begin
                // nothing intact: publish nothing, restart at the oldest boundary
                wa = E_START;
                torn_next = 1'b1;
                if (torn_run_reg != 2'd2) torn_run_next = torn_run_reg + 2'd1;
                state_next = ST1 << S_WDRAIN;
            end
        end
        state_reg[S_U12]: begin
            wa = E_RWANT;
            we = 1'b1;
            f_ovf_next = alu_carry;
            state_next = ST1 << S_RC1;
        end
        state_reg[S_WD1]: begin
            state_next = ST1 << S_WD2;
        end
        state_reg[S_WD2]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_WD3;
        end
        state_reg[S_WD3]: begin
            len_next = res[AW-1:0];
            state_next = ST1 << S_WDRAIN;
        end
        state_reg[S_WDRAIN]: begin
            if (mv_wr_done) begin
                if (torn_reg) begin
                    poll_zero = 1'b1;
                    state_next = ST1 << S_IDLE;
                end else if (keep_part_reg && f_ovf_reg) begin
                    fault_next = RM_FAULT_POSITION_LIMIT;
                    fwhere_next = W_WORD;
                    fsel_next = WS_RINT;
                    state_next = ST1 << S_DRAIN;
                end else if (keep_part_reg && f_grow_reg) begin
                    // a kept partial round: readers of the replica must start at its
                    // first kept partition before the replica's tail claims the round
                    word_wr_next = 1'b1;
                    wsel_next = WS_RINT;
                    word_data_next = res;
                    wa = E_RINT;
                    we = 1'b1;
                    state_next = ST1 << S_PUB_RINT;
                end else if (cfg_crc_enable) begin
                    // entries first, then table_tail, then the replica's tail
                    word_wr_next = 1'b1;
                    wsel_next = WS_TTAIL;
                    word_data_next = res;
                    state_next = ST1 << S_PUB_TTAIL;
                end else begin
                    word_wr_next = 1'b1;
                    wsel_next = WS_RTAIL;
                    word_data_next = res;
                    state_next = ST1 << S_PUB_REPLICA;
                end
            end
        end
        state_reg[S_PUB_RINT]: begin
            if (word_bad) begin
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (word_ok) begin
                word_wr_next = 1'b1;
                wsel_next = cfg_crc_enable ? WS_TTAIL : WS_RTAIL;
                word_data_next = res;
                state_next = cfg_crc_enable ? ST1 << S_PUB_TTAIL : ST1 << S_PUB_REPLICA;
            end
        end
        state_reg[S_PUB_TTAIL]: begin
            if (word_bad) begin
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (word_ok) begin
                word_wr_next = 1'b1;
                wsel_next = WS_RTAIL;
                word_data_next = res;
                state_next = ST1 << S_PUB_REPLICA;
            end
        end
        state_reg[S_PUB_REPLICA]: begin
            if (word_bad) begin
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (word_ok) begin
                word_wr_next = 1'b1;
                wsel_next = WS_MIRRORED;
                state_next = ST1 << S_PUB_RING;
            end
        end
        state_reg[S_PUB_RING]: begin
            if (word_bad) begin
                fault_next = word_wr_fault;
                fwhere_next = W_WORD;
                fsel_next = wsel_reg;
                state_next = ST1 << S_DRAIN;
            end else if (word_ok) begin
                state_next = ST1 << S_F0;
            end
        end
        state_reg[S_F0]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_F1;
        end
        state_reg[S_F1]: begin
            // MIRRORED, then BYTES_COPIED in the next cycle: a CPU reading BYTES_COPIED,
            // MIRRORED, BYTES_COPIED cannot fit its three reads between the two updates
            wa = E_MIRRORED;
            we = 1'b1;
            state_next = ST1 << S_F2;
        end
        state_reg[S_F2]: begin
            wa = E_BYTES;
            we = 1'b1;
            state_next = ST1 << S_F3;
        end
        state_reg[S_F3]: begin
            wa = E_START;
            we = 1'b1;
            gap_next = 1'b0;
            torn_run_next = 2'd0;
            // progress counts at most 4 GiB per round, far above any threshold
            progress_next = prog_hit_reg ? 32'd0 : prog_sum_reg;
            ev_progress_next = prog_hit_reg;
            ev_sync_done_next = sync_round_reg;
            poll_zero = 1'b1;
            state_next = ST1 << S_IDLE;
        end
        // ------------------------------------------------ faults
        state_reg[S_DRAIN]: begin
            // issue nothing new; wait for every outstanding transaction (a watchdog
            // fault cannot wait: the slave stopped answering)
            if (mv_quiet || fault_reg == RM_FAULT_WATCHDOG) begin
                state_next = ST1 << S_X1;
            end
        end
        state_reg[S_X1]: begin
            wsel_next = fsel_reg;       // X3 reads the word's address through word_addr
            if (fwhere_reg == W_SRC || fwhere_reg == W_DST) begin
                state_next = ST1 << S_X4;
            end else begin
                state_next = ST1 << S_X2;
            end
        end
        state_reg[S_X2]: begin
            wa = E_FPOS;
            we = 1'b1;
            state_next = ST1 << S_X3;
        end
        state_reg[S_X3]: begin
            wa = E_FADDR;
            we = 1'b1;
            state_next = ST1 << S_X8;
        end
        state_reg[S_X4]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_X5;
        end
        state_reg[S_X5]: begin
            wa = E_FPOS;
            we = 1'b1;
            acc_we = 1'b1;
            state_next = ST1 << S_X6;
        end
        state_reg[S_X6]: begin
            acc_we = 1'b1;
            state_next = ST1 << S_X7;
        end
        state_reg[S_X7]: begin
            wa = E_FADDR;
            we = 1'b1;
            state_next = ST1 << S_X8;
        end
        state_reg[S_X8]: begin
            ev_fault_next = 1'b1;
            state_next = ST1 << S_FAULT;
        end
        state_reg[S_FAULT]: begin
            if (cfg_soft_reset && mv_quiet) begin
                fault_next = RM_FAULT_NONE;
                cnt_clear = 1'b1;
                progress_next = 32'd0;
                poll_zero = 1'b1;
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                rint_known_next = 1'b0;
                clear_next = 1'b1;
                clr_cnt_next = 4'd0;
                clr_ev_next = 1'b1;
                state_next = ST1 << S_CLEAR;
            end
        end
        default: state_next = ST1 << S_FAULT;
    endcase

    if (acc_we) acc_next = res;
    state_pre = state_next;

    // a data error or the watchdog, reported by the mover, stops any round; the first
    // fault wins and keeps its details
    if (fault_reg == RM_FAULT_NONE && mv_err) begin
        fault_next = mv_err_code;
        fwhere_next = mv_err_where;
        fidx_next = mv_err_idx;
        fsel_next = wsel_reg;
        if (mv_err_where == W_CFG) begin
            // a CRC-table entry write failed: FAULT_ADDR names the table (its table_tail)
            fwhere_next = W_WORD;
            fsel_next = WS_TTAIL;
        end
    end
    // a round stops at once on a mover error (registered there, so this stays short):
    // nothing it would issue in this cycle goes out
    if ((mv_err || fault_reg != RM_FAULT_NONE) && in_round) begin
        state_next = ST1 << S_DRAIN;
        word_rd_next = 1'b0;
        word_wr_next = 1'b0;
        copy_go_next = 1'b0;
    end
end

always @* begin
    if (poll_zero) begin
        poll_cnt_next = 32'd0;
        poll_wait_next = 1'b0;
    end else if (poll_load) begin
        poll_cnt_next = cfg_poll_interval;
        poll_wait_next = cfg_poll_interval != 32'd0;
    end else if (poll_dec) begin
        poll_cnt_next = poll_cnt_reg - 32'd1;
        poll_wait_next = poll_cnt_reg != 32'd1;
    end else begin
        poll_cnt_next = poll_cnt_reg;
        poll_wait_next = poll_wait_reg;
    end
end

// ALU controls of the state being entered, registered. Operand A is selected a cycle
// ahead into a_op_reg (with the position file's read), so the 64-bit adder sees two
// flip-flops (a_op_reg and the accumulator) and a one-LUT invert/enable in front of it.
//
// The operand select and the position file's read address are flip-flops too (a_sel_reg,
// ra_reg): each state names the operand of its successor (a_sel) and the entry it reads
// for it (ra), and both are decoded from state_pre, the state being entered (the next
// state before a fault's override), a cycle ahead. Where a state's successor depends on a
// condition, the successors it can branch to either all take the same operand, or those
// that do not use it (DRAIN, IDLE, waiting states) get the one of the branch that does; a
// waiting state loads its successor's operand every cycle it waits (it computes nothing
// with it). So the 12-way, 64-bit select and the LUT-RAM read start at flip-flops, and
// the round's conditions (flags, word completions) end at eight flip-flops instead of
// fanning out to the select (docs/hw.md, "Timing and area"). When a fault sends the
// round to S_DRAIN, that state computes and writes nothing, so the controls it gets do
// not matter, and the wide "any round state" OR stays off them.
always @* begin
    a_sel_pre = A_POS;
    (* parallel_case *)
    case (1'b1)
        // -> S_CLEAR (a SOFT_RESET); LOAD0 (a MIRRORED load) computes nothing and selects
        // LOAD1's operand
        state_pre[S_IDLE], state_pre[S_CLEAR], state_pre[S_FAULT]: a_sel_pre = A_ZERO;
        state_pre[S_LOAD0], state_pre[S_LOAD1], state_pre[S_LOAD2]: a_sel_pre = A_LOADV;
        // -> T2, T3, T6, T7, T8, I2, I4, I5, I6, RINT_R2, U2, U3: the word just read
        state_pre[S_T1], state_pre[S_T2], state_pre[S_T5], state_pre[S_T6],
        state_pre[S_T7], state_pre[S_I1], state_pre[S_I3], state_pre[S_I4],
        state_pre[S_I5], state_pre[S_RINT_R], state_pre[S_U1],
        state_pre[S_U2]: a_sel_pre = A_WORD;
        // -> T10, I8: acc - (capacity - partition)
        state_pre[S_T9], state_pre[S_I7]: a_sel_pre = A_NCLP;
        // -> P7, U12: acc + capacity - partition + 1 (U11 goes to U12 when it keeps, else
        // to WDRAIN, which then computes nothing: the round published nothing)
        state_pre[S_P8], state_pre[S_U11]: a_sel_pre = A_CLP;
        state_pre[S_P1], state_pre[S_X5]: a_sel_pre = A_ZERO;     // -> P2, X6
        state_pre[S_PUB_RING]: a_sel_pre = A_LEN;                  // -> F0
        state_pre[S_NR2]: a_sel_pre = A_RUN;                       // -> NR3
        // (the fault's kind is final before S_DRAIN)
        state_pre[S_X2]: a_sel_pre = fwhere_reg == W_WORD ? A_WADDR : A_ZERO;  // -> X3
        state_pre[S_X4]: a_sel_pre = A_BEAT;                       // -> X5
        state_pre[S_X6]: a_sel_pre = fwhere_reg == W_SRC ? A_RING : A_REPLICA; // -> X7
        default: begin
        end
    endcase
end

// the entry each state reads (a_op_reg of its successor, with A_POS); the flags it
// depends on are final a cycle before the state (catch_up_now: T9 set f_ngt, T10 reads)
always @* begin
    ra_pre = E_START;
    (* parallel_case *)
    case (1'b1)
        state_pre[S_IDLE], state_pre[S_TAIL_R]: ra_pre = E_TAIL;
        state_pre[S_T9], state_pre[S_I7]: ra_pre = E_NEWEST;
        state_pre[S_T11]: ra_pre = catch_up_now ? E_NEWEST : f_lapped_reg ? E_OLDEST : E_START;
        state_pre[S_P3], state_pre[S_U7]: ra_pre = E_LOST;
        state_pre[S_P4]: ra_pre = f_over_reg ? E_OVERRUNS : E_CSTART;
        state_pre[S_P5], state_pre[S_I1], state_pre[S_I2], state_pre[S_U5],
        state_pre[S_WD1]: ra_pre = E_CSTART;
        state_pre[S_P8], state_pre[S_P7], state_pre[S_P10], state_pre[S_P11],
        state_pre[S_COPY], state_pre[S_INTENT_R], state_pre[S_I8], state_pre[S_TAIL2_R],
        state_pre[S_U8], state_pre[S_WD2], state_pre[S_PUB_RINT], state_pre[S_PUB_TTAIL],
        state_pre[S_PUB_REPLICA], state_pre[S_PUB_RING], state_pre[S_F0],
        state_pre[S_F2]: ra_pre = E_TNEW;
        state_pre[S_P9], state_pre[S_P12], state_pre[S_RINT_R], state_pre[S_RINT_R2],
        state_pre[S_RC1], state_pre[S_RC3]: ra_pre = E_RWANT;
        state_pre[S_RC2]: ra_pre = E_RINT;
        state_pre[S_NR1]: ra_pre = E_RBASE;
        state_pre[S_U1], state_pre[S_U2], state_pre[S_U3]: ra_pre = E_INTENT;
        state_pre[S_U4], state_pre[S_U4B]: ra_pre = E_OVERRUNS;
        state_pre[S_U6], state_pre[S_U9], state_pre[S_U10], state_pre[S_U11]: ra_pre = E_OLDEST;
        state_pre[S_WD3], state_pre[S_WDRAIN]:
            ra_pre = (keep_part_reg && f_grow_reg) ? E_RWANT : E_TNEW;
        state_pre[S_F1]: ra_pre = E_BYTES;
        state_pre[S_X1]: ra_pre = (fwhere_reg == W_SRC || fwhere_reg == W_DST) ? E_RBASE : E_START;
        default: begin
        end
    endcase
end


always @* begin
    b_en_next = 1'b0;
    b_inv_next = 1'b0;
    cin_next = 1'b0;
    m_sel_next = M_NONE;
    (* parallel_case *)
    case (1'b1)
        // A - acc: tail - tail seen, t - start, i - tnew, i - cstart, t2 - tnew
        state_pre[S_T2], state_pre[S_T6], state_pre[S_I2], state_pre[S_I4],
        state_pre[S_U2]: begin
            b_en_next = 1'b1;
            b_inv_next = 1'b1;
            cin_next = 1'b1;
        end
        // (word - 1) & ~(partition - 1): the partition start below a position
        state_pre[S_T8], state_pre[S_I6]: begin
            b_inv_next = 1'b1;
            m_sel_next = M_PART;
        end
        // entry - acc
        state_pre[S_T4], state_pre[S_T9], state_pre[S_P3], state_pre[S_P4],
        state_pre[S_P9], state_pre[S_P11], state_pre[S_RC3], state_pre[S_U4],
        state_pre[S_U7], state_pre[S_U10], state_pre[S_WD3]: begin
            b_en_next = 1'b1;
            b_inv_next = 1'b1;
            cin_next = 1'b1;
        end
        // acc - (capacity - partition): the oldest intact partition
        state_pre[S_T10], state_pre[S_I8]: begin
            b_en_next = 1'b1;
            cin_next = 1'b1;
        end
        // acc + capacity - partition + 1: the replica intent of a resynchronised round
        state_pre[S_P7], state_pre[S_U12]: begin
            b_en_next = 1'b1;
            cin_next = 1'b1;
        end
        state_pre[S_P2]: begin
            b_en_next = 1'b1;
            m_sel_next = M_BEAT;
        end
        state_pre[S_P5], state_pre[S_U5]: cin_next = 1'b1;      // overruns + 1
        state_pre[S_U8], state_pre[S_F2]: b_en_next = 1'b1;     // lost/bytes + acc
        state_pre[S_NR3], state_pre[S_X5], state_pre[S_X7]: b_en_next = 1'b1;
        state_pre[S_X6]: begin
            b_en_next = 1'b1;
            m_sel_next = M_CAP;
        end
        default: begin
        end
    endcase
end

// ---------------------------------------------------------------- status read port
/* verilator lint_off UNUSEDSIGNAL */
reg [63:0] st_value_reg;
/* verilator lint_on UNUSEDSIGNAL */
reg [3:0] st_entry;
reg [1:0] st_kind;                           // 0 entry, 1 bursts, 2 busy cycles, 3 zero
always @* begin
    st_entry = E_MIRRORED;
    st_kind = 2'd0;
    case (st_addr)
        RM_REG_MIRRORED_LO: st_entry = E_MIRRORED;
        RM_REG_TAIL_SEEN_LO: st_entry = E_TAIL;
        RM_REG_BYTES_COPIED_LO: st_entry = E_BYTES;
        RM_REG_OVERRUNS_LO: st_entry = E_OVERRUNS;
        RM_REG_BYTES_LOST_LO: st_entry = E_LOST;
        RM_REG_FAULT_ADDR_LO: st_entry = E_FADDR;
        RM_REG_FAULT_POSITION_LO: st_entry = E_FPOS;
        RM_REG_BURSTS_LO: st_kind = 2'd1;
        RM_REG_BUSY_CYCLES_LO: st_kind = 2'd2;
        default: st_kind = 2'd3;
    endcase
end

initial begin : pos_init
    integer i;
    for (i = 0; i < 16; i = i + 1) pos_mem[i] = 64'd0;
end

always @(posedge clk) begin
    if (we) pos_mem[wa] <= res;
    a_op_reg <= a_next;
    if (rst) a_op_reg <= 64'd0;    // (here: a register has one always block, or synthesis
                                   //  sees two drivers; Yosys tied a_op_reg to 0)
    case (st_kind)
        2'd0: st_value_reg <= pos_mem[st_entry];
        2'd1: st_value_reg <= bursts_reg;
        2'd2: st_value_reg <= busy_cycles_reg;
        default: st_value_reg <= 64'd0;
    endcase
end

always @(posedge clk) begin
    a_sel_reg <= a_sel_pre;
    ra_reg <= ra_pre;
    clp_nz_reg <= cfg_cap_less_part != 0;
    b_en <= b_en_next;
    b_inv <= b_inv_next;
    cin <= cin_next;
    m_sel <= m_sel_next;
    prog_sum_reg <= progress_reg + len_reg[31:0];
    gtcap_reg <= acc_gt_cap;
    catch_up_reg <= catch_up_now;
    prog_hit_reg <= cfg_irq_progress != 32'd0 && prog_sum_reg >= cfg_irq_progress;
    state_reg <= state_next;
    fault_reg <= fault_next;
    mv_abort_reg <= fault_next != RM_FAULT_NONE;
    fwhere_reg <= fwhere_next;
    fidx_reg <= fidx_next;
    fsel_reg <= fsel_next;
    acc_reg <= acc_next;
    clr_cnt_reg <= clr_cnt_next;
    clr_ev_reg <= clr_ev_next;
    len_reg <= len_next;
    clow_reg <= clow_next;
    tlow_reg <= tlow_next;
    f_bad_reg <= f_bad_next;
    f_back_reg <= f_back_next;
    f_nothing_reg <= f_nothing_next;
    f_lapped_reg <= f_lapped_next;
    f_ngt_reg <= f_ngt_next;
    f_low_reg <= f_low_next;
    f_borrow_reg <= f_borrow_next;
    f_ovf_reg <= f_ovf_next;
    f_grow_reg <= f_grow_next;
    f_keep_reg <= f_keep_next;
    f_rw_gt_t_reg <= f_rw_gt_t_next;
    f_over_reg <= f_over_next;
    gap_reg <= gap_next;
    torn_reg <= torn_next;
    keep_part_reg <= keep_part_next;
    torn_run_reg <= torn_run_next;
    rint_known_reg <= rint_known_next;
    sync_round_reg <= sync_round_next;
    poll_cnt_reg <= poll_cnt_next;
    poll_wait_reg <= poll_wait_next;
    progress_reg <= progress_next;
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
    rem_reg <= rem_next;
    run_first_reg <= run_first_next;
    run_last_reg <= run_last_next;
    first_strb_reg <= first_strb_next;
    last_strb_reg <= last_strb_next;
    clear_reg <= clear_next;

    if (cnt_clear) begin
        bursts_reg <= 64'd0;
        busy_cycles_reg <= 64'd0;
    end else begin
        if (mv_burst) bursts_reg <= bursts_reg + 64'd1;
        if (st_busy) busy_cycles_reg <= busy_cycles_reg + 64'd1;
    end

    if (rst) begin
        // the position file is cleared by S_CLEAR (register reads wait for it)
        state_reg <= ST1 << S_CLEAR;
        a_sel_reg <= A_ZERO;
        ra_reg <= E_START;
        b_en <= 1'b0;
        b_inv <= 1'b0;
        cin <= 1'b0;
        m_sel <= M_NONE;
        clr_cnt_reg <= 4'd0;
        clr_ev_reg <= 1'b0;
        fault_reg <= RM_FAULT_NONE;
        mv_abort_reg <= 1'b0;
        fwhere_reg <= W_CFG;
        fidx_reg <= 0;
        fsel_reg <= WS_TAIL;
        gap_reg <= 1'b0;
        torn_reg <= 1'b0;
        keep_part_reg <= 1'b0;
        torn_run_reg <= 2'd0;
        rint_known_reg <= 1'b0;
        sync_round_reg <= 1'b0;
        poll_cnt_reg <= 32'd0;
        poll_wait_reg <= 1'b0;
        progress_reg <= 32'd0;
        bursts_reg <= 64'd0;
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
    .FIFO_DEPTH(FIFO_DEPTH), .CRC_TABLE(CRC_TABLE), .AXI_CACHE(AXI_CACHE),
    .AXI_PROT(AXI_PROT), .BW(BW)
) mover (
    .clk(clk), .rst(rst),
    .src_base(cfg_ring_base), .dst_base(cfg_replica_base), .off_mask(cfg_cap_mask),
    .watchdog(cfg_watchdog),
    .copy_start(copy_go_reg), .copy_off(copy_off_reg), .copy_beats(copy_beats_reg),
    .copy_first_strb(run_first_reg ? first_strb_reg : STRB_ALL),
    .copy_last_strb(run_last_reg ? last_strb_reg : STRB_ALL),
    .copy_rd_done(mv_rd_done), .copy_wr_done(mv_wr_done), .burst_issued(mv_burst),
    .word_rd(word_rd_reg), .word_wr(word_wr_reg), .word_addr(word_addr),
    .word_wdata(word_data_reg), .word_done(mv_word_done), .word_rdata(mv_rdata),
    .word_resp(mv_resp), .word_busy(mv_word_busy),
    .copy_round_first(run_first_reg), .copy_round_last(run_last_reg),
    .crc_enable(cfg_crc_enable), .crc_capacity(cfg_capacity), .crc_part_mask(cfg_part_mask),
    .crc_seed_load(cfg_crc_seed_load), .crc_seed(cfg_crc_seed),
    .crc_partial(st_crc_partial), .crc_blocks(st_crc_blocks),
    .crc_tail_addr(mv_crc_tail_addr),
    .abort(CRC_TABLE != 0 ? mv_abort_reg : fault_reg != RM_FAULT_NONE), .clear(clear_reg),
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
assign st_busy = |state_reg[S_X8:S_TAIL_R] || |state_reg[S_F0:S_NR1]
               || state_reg[S_PUB_TTAIL] || state_reg[S_U4B];
assign st_idle = state_reg[S_IDLE];
assign st_error = state_reg[S_FAULT];
// a MIRRORED load, from its pulse to the last entry written, holds the register file's
// bus too: a read of MIRRORED right after the load's response sees the loaded value
assign st_clearing = state_reg[S_CLEAR] || cfg_mirrored_load || state_reg[S_LOAD0]
                   || state_reg[S_LOAD1] || state_reg[S_LOAD2] || state_reg[S_LOAD3];
assign st_fault = fault_reg;
assign st_value = st_value_reg;
assign ev_sync_done = ev_sync_done_reg;
assign ev_soft_reset_done = ev_soft_reset_done_reg;
assign ev_fault = ev_fault_reg;
assign ev_progress = ev_progress_reg;
assign ev_overrun = ev_overrun_reg;

endmodule

`resetall
