// AXI4 data mover of the ring-mirror IP: copies one run of beats from a source ring area to a
// destination area at the same offsets (offsets wrap at off_mask + 1), and performs the
// single 8-byte word reads and writes of the control flow. It owns all five channels.
//
//   AR  bursts from a planner (rm_burst_plan), issued only against free FIFO space
//       (credits), so RREADY is always high; up to MAX_OUTSTANDING in flight.
//   R   data beats -> rm_fifo (registered output) -> W output register. The W register is
//       loaded only when empty or accepted, so WDATA/WSTRB/WLAST never change while
//       WVALID && !WREADY; after `abort` the beats still owed go out with WSTRB = 0 (bytes
//       read after an error never land), the strobe decided when the beat is loaded.
//       A CRC unit on the write data belongs between rm_fifo's output and this register
//       (docs/hw.md, "Extending the data path").
//   AW  one data burst per read burst already issued (a second planner on the same run),
//       never before: W data for a burst exists only after its read was issued.
//   B   a third planner follows the acknowledged bursts, so a write error names the first
//       beat of its burst.
//   CRC rm_crc_table checksums the data beats as they are loaded into W (what the replica
//       receives) and queues one replica CRC-table entry write per block piece. An entry
//       write is a one-beat, 4-byte burst put between two data bursts: while one waits, AW stops at
//       the next burst boundary W reaches (or W at the one AW reached), the entry's AW and
//       W go out together, and the data bursts continue. One entry write is in flight at a
//       time; its B is told from data B's by counting the responses owed before it. With
//       the table on, AW leads W by one burst at most and a new burst waits while the
//       table's queue could not take two bursts' entries, so the queue never overflows and
//       W never waits for an entry that waits for W.
// A word write holds data AW/W back until its response (the replica's tail intent must be
// acknowledged before the round's first data write); data reads go on meanwhile. Word reads
// are issued only while no data read is outstanding, word writes only while no data write
// is (the controller's order), so R and B are never ambiguous with a single ID.
//
// Watchdog: while anything is outstanding and no channel hands anything over for
// `watchdog` cycles (0: off), err_valid reports WATCHDOG once and names the oldest work
// that is waiting (a word access, the next read beat, or the first unacknowledged write).
`resetall
`timescale 1ns / 1ps
`default_nettype none

module rm_mover #(
    parameter DATA_WIDTH = 64,
    parameter ADDR_WIDTH = 40,
    parameter ID_WIDTH = 1,
    parameter MAX_BURST_LEN = 16,
    parameter MAX_OUTSTANDING = 4,
    parameter FIFO_DEPTH = 64,
    parameter CRC_TABLE = 1,                        // 0: no CRC unit, no entry writes
    parameter REG_TESTS = CRC_TABLE,                // 1: the registered tests (below)
    parameter [3:0] AXI_CACHE = 4'b1111,
    parameter [2:0] AXI_PROT = 3'b010,
    parameter BW = ADDR_WIDTH - $clog2(DATA_WIDTH / 8) + 1   // beat-count bits
) (
    input  wire                    clk,
    input  wire                    rst,

    // configuration, stable while anything runs (the register file refuses changes)
    input  wire [ADDR_WIDTH-1:0]   src_base,
    input  wire [ADDR_WIDTH-1:0]   dst_base,
    input  wire [ADDR_WIDTH-1:0]   off_mask,       // area bytes - 1
    input  wire [31:0]             watchdog,

    // copy of one run
    input  wire                    copy_start,
    input  wire [ADDR_WIDTH-1:0]   copy_off,       // offset of the first beat, beat aligned
    input  wire [BW-1:0]           copy_beats,     // >= 1
    input  wire [DATA_WIDTH/8-1:0] copy_first_strb,
    input  wire [DATA_WIDTH/8-1:0] copy_last_strb,
    input  wire                    copy_round_first, // the run starts a round (CRC table)
    input  wire                    copy_round_last,  // the run ends a round
    output wire                    copy_rd_done,   // every data beat arrived
    output wire                    copy_wr_done,   // every data write acknowledged
    output wire                    burst_issued,   // one data read burst went out

    // single 8-byte words
    input  wire                    word_rd,
    input  wire                    word_wr,
    input  wire [ADDR_WIDTH-1:0]   word_addr,      // 8-byte aligned
    input  wire [63:0]             word_wdata,
    output wire                    word_done,
    output wire [63:0]             word_rdata,
    output wire [1:0]              word_resp,
    output wire                    word_busy,      // a word access has not completed

    // replica CRC table (rm_crc_table; geometry from the replica's layout)
    input  wire                    crc_enable,
    input  wire [ADDR_WIDTH-1:0]   crc_capacity,
    input  wire [ADDR_WIDTH-1:0]   crc_part_mask,
    input  wire                    crc_seed_load,
    input  wire [31:0]             crc_seed,
    output wire [31:0]             crc_partial,
    output wire [31:0]             crc_blocks,
    output wire [ADDR_WIDTH-1:0]   crc_tail_addr,  // the table's table_tail word

    // faults
    input  wire                    abort,          // issue no more reads; zero strobes
    input  wire                    clear,          // forget an aborted run (when quiet,
                                                   // after at least one cycle of abort)
    output wire                    err_valid,      // a data error or the watchdog
    output wire [7:0]              err_code,
    output wire [1:0]              err_where,      // 0 word, 1 source beat, 2 dest beat,
                                                   // 3 CRC-table entry
    output wire [BW-1:0]           err_idx,        // beat index in the run
    output wire                    quiet,          // nothing outstanding on any channel

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
    input  wire [DATA_WIDTH-1:0]   m_axi_rdata,
    input  wire [1:0]              m_axi_rresp,
    input  wire                    m_axi_rlast,
    input  wire                    m_axi_rvalid,
    output wire                    m_axi_rready
);

`include "ring_mirror_regmap.vh"

localparam BYTES = DATA_WIDTH / 8;
localparam LSB = $clog2(BYTES);
localparam [2:0] FULL_SIZE = LSB[2:0];
localparam MB_LOG = $clog2(MAX_BURST_LEN);
localparam MBW = MB_LOG > 0 ? MB_LOG : 1;
// Counters sized by what they count: read bursts in flight 0..MAX_OUTSTANDING; read
// bursts whose AW is not loaded yet (while a word write holds AW and W back the FIFO
// bounds them to FIFO_DEPTH; only a slave taking W far ahead of AW lets them grow further,
// and then AR waits at the counter's top, `aw_owed_reg` all ones). 16 bits for the FIFO
// credits (narrower measured larger after mapping), for what the slave alone bounds (AW
// handshakes without a B) and for the CRC table's bookkeeping.
localparam CW = 16;                             // FIFO credits (FIFO_DEPTH <= 16384)
localparam RW = $clog2(MAX_OUTSTANDING + 1);
localparam AOW = $clog2(FIFO_DEPTH) + 2;
localparam OW = 16;
localparam [BYTES-1:0] STRB_ALL = {BYTES{1'b1}};
localparam [1:0] W_WORD = 2'd0, W_SRC = 2'd1, W_DST = 2'd2, W_TABLE = 2'd3;
// CRC table entries one burst can complete (blocks are >= 64 bytes), and the entry queue:
// with the table on, AW leads W by one burst at most, and a burst starts (its AW or, with
// no AW out for it, its first W beat) only while two bursts' entries still fit
localparam CRC_PER_BURST = (MAX_BURST_LEN * BYTES) / 64 + 1;
localparam CRC_QUEUE = 1 << $clog2(2 * CRC_PER_BURST + 4);

// ---------------------------------------------------------------- state (x_reg / x_next)
// run
reg [BW-1:0] total_reg, total_next;            // beats of the run
reg [BW-1:0] r_idx_reg, r_idx_next;            // data beats received
reg [BW-1:0] b_idx_reg, b_idx_next;            // data beats acknowledged
reg [BW-1:0] w_left_reg, w_left_next;          // data beats not yet loaded into W
// The registered tests below (w_is_last_reg, wd_nz_reg / wd_one_reg, the run's done flags
// decided before the response's select) are built with REG_TESTS != 0 only: by default with
// the CRC table (the default build's mirroring mover), and in rm_restore's mover (which has
// no table): there the IP fills enough of the die that these one-bit decisions' nets cross
// it. The base mirror meets its clock with the comparisons and has a LUT budget;
// registered, they cost it about 270 LUT4 (ABC maps the comparisons into the logic they
// feed), so it keeps them.
// w_left_reg == 1, registered from the next value (tested on w_left_reg and copy_beats in
// parallel with the load decision): the W strobes, WLAST and the burst bookkeeping read a
// flip-flop instead of a BW-bit comparison
reg w_is_last_reg;
reg [MBW-1:0] w_low_reg, w_low_next;           // beat index within its aligned group
reg w_first_reg, w_first_next;
reg [BYTES-1:0] first_strb_reg, first_strb_next;
reg [BYTES-1:0] last_strb_reg, last_strb_next;
reg [ADDR_WIDTH-1:0] ar_off_reg, ar_off_next;
reg [ADDR_WIDTH-1:0] aw_off_reg, aw_off_next;
reg [CW-1:0] credit_reg, credit_next;
reg [RW-1:0] rd_bursts_reg, rd_bursts_next;    // data read bursts in flight
reg [AOW-1:0] aw_owed_reg, aw_owed_next;       // read bursts issued whose AW is not loaded
reg [OW-1:0] b_owed_reg, b_owed_next;          // AW handshakes without a B yet

// channel registers
reg ar_valid_reg, ar_valid_next;
reg [ADDR_WIDTH-1:0] ar_addr_reg, ar_addr_next;
reg [7:0] ar_len_reg, ar_len_next;
reg [2:0] ar_size_reg, ar_size_next;
reg aw_valid_reg, aw_valid_next;
reg [ADDR_WIDTH-1:0] aw_addr_reg, aw_addr_next;
reg [7:0] aw_len_reg, aw_len_next;
reg [2:0] aw_size_reg, aw_size_next;
reg w_valid_reg, w_valid_next;
reg [DATA_WIDTH-1:0] w_data_reg, w_data_next;
reg [BYTES-1:0] w_strb_reg, w_strb_next;
reg w_last_reg, w_last_next;

// word accesses
reg word_ar_pend_reg, word_ar_pend_next;    // word read not yet on AR
reg word_r_busy_reg, word_r_busy_next;      // word read waiting for R
reg word_mode_reg, word_mode_next;          // word write until its B
reg word_aw_pend_reg, word_aw_pend_next;
reg word_w_pend_reg, word_w_pend_next;
reg [ADDR_WIDTH-1:0] word_addr_reg, word_addr_next;
reg [63:0] word_wdata_reg, word_wdata_next;
reg word_done_reg, word_done_next;
reg [63:0] word_rdata_reg, word_rdata_next;
reg [1:0] word_resp_reg, word_resp_next;

reg err_valid_reg, err_valid_next;
reg [7:0] err_code_reg, err_code_next;
reg [1:0] err_where_reg, err_where_next;
reg [BW-1:0] err_idx_reg, err_idx_next;
reg [31:0] wd_cnt_reg, wd_cnt_next;
reg wd_fired_reg, wd_fired_next;
// the watchdog's reload condition (nothing outstanding, a handshake, or the watchdog off),
// registered: the wide idle test and the handshake inputs end at this flip-flop instead of
// the 32 enables of the counter, so the count runs a cycle behind the bus (a fault comes
// one cycle later than WATCHDOG cycles after the last handshake)
reg wd_reload_reg;
// wd_cnt_reg != 0 and == 1, registered from the next value (the watchdog setting's tests or
// the count's == 2, selected by the reload): the fault decision and the error registers
// start at flip-flops instead of a 32-bit comparison; the fault comes in the same cycle
reg wd_nz_reg, wd_one_reg;
reg burst_issued_reg, burst_issued_next;
// registered: the controller acts on it a cycle late, far from the mover's counters.
// Nothing outstanding can start again without a request, so a cycle-old "idle and no
// request" still holds.
reg quiet_reg, quiet_next;
// the run's completion, registered from the next counter values (so exactly what comparing
// the registers would give, a cycle's logic earlier): the controller's decisions on it
// then start at a flip-flop instead of a beat-count comparison
reg rd_done_reg, wr_done_reg;

// CRC table entry writes
reg signed [OW-1:0] aw_w_diff_reg, aw_w_diff_next;  // data AWs loaded - data bursts W finished
// its sign, == 0 and == 1, registered from the next value: the AW/W decisions (W's hold,
// hence the W register's load and strobes) start at flip-flops instead of OW-bit
// comparisons. The count moves by at most one a cycle, so each flag's next value is a
// comparison of the register with a constant, selected by the move.
reg aw_w_neg_reg, aw_w_zero_reg, aw_w_one_reg;
reg w_mid_reg, w_mid_next;                  // W is inside a data burst
reg ent_b_pend_reg, ent_b_pend_next;        // an entry write waits for its B
reg [OW-1:0] ent_b_ahead_reg, ent_b_ahead_next;  // B's owed before it
reg ent_b_now_reg;                          // ent_b_ahead_reg == 0, registered from the next
                                            // value (off the B decode and the B counters)

// ---------------------------------------------------------------- planners
wire ar_plan_valid, aw_plan_valid, b_plan_valid;
wire [8:0] ar_plan_beats, aw_plan_beats, b_plan_beats;
/* verilator lint_off UNUSEDSIGNAL */
wire ar_plan_done, aw_plan_done, b_plan_done;
/* verilator lint_on UNUSEDSIGNAL */
wire [7:0] copy_low = copy_off[LSB +: 8];
wire ar_step, aw_step, b_step;

rm_burst_plan #(.BW(BW), .MAX_BURST_LEN(MAX_BURST_LEN)) ar_plan (
    .clk(clk), .rst(rst), .clear(clear), .load(copy_start), .load_beats(copy_beats),
    .load_low(copy_low), .step(ar_step), .valid(ar_plan_valid), .beats(ar_plan_beats),
    .done(ar_plan_done));
rm_burst_plan #(.BW(BW), .MAX_BURST_LEN(MAX_BURST_LEN)) aw_plan (
    .clk(clk), .rst(rst), .clear(clear), .load(copy_start), .load_beats(copy_beats),
    .load_low(copy_low), .step(aw_step), .valid(aw_plan_valid), .beats(aw_plan_beats),
    .done(aw_plan_done));
rm_burst_plan #(.BW(BW), .MAX_BURST_LEN(MAX_BURST_LEN)) b_plan (
    .clk(clk), .rst(rst), .clear(clear), .load(copy_start), .load_beats(copy_beats),
    .load_low(copy_low), .step(b_step), .valid(b_plan_valid), .beats(b_plan_beats),
    .done(b_plan_done));

// ---------------------------------------------------------------- handshake decisions
wire ar_free = !ar_valid_reg || m_axi_arready;
wire word_ar_go = word_ar_pend_reg && ar_free;
wire [CW-1:0] ar_beats_c = {{(CW-9){1'b0}}, ar_plan_beats};
wire ar_issue = ar_plan_valid && !abort && !clear && ar_free && !word_ar_pend_reg
    && rd_bursts_reg < MAX_OUTSTANDING[RW-1:0] && credit_reg >= ar_beats_c
    && aw_owed_reg != {AOW{1'b1}};
assign ar_step = ar_issue;

wire r_fire = m_axi_rvalid;                     // RREADY is always high
wire r_data = r_fire && !word_r_busy_reg;
wire r_err = m_axi_rresp[1];

// data FIFO
wire [DATA_WIDTH-1:0] fifo_data;
wire fifo_valid, fifo_empty;
/* verilator lint_off UNUSEDSIGNAL */
wire fifo_full;   // cannot happen: reads are issued against FIFO credits
/* verilator lint_on UNUSEDSIGNAL */
wire w_free = !w_valid_reg || m_axi_wready;
// The table's enable, with the table a flip-flop of the mover's own: the register file's
// bit sits by the register block, and its net crossed the die into W's load decision and
// the table's pending count. A cycle's lag is harmless: CRC_CONFIG is written only while
// the engine is stopped, and a write holds the configuration check (cfg_ready) for 5
// cycles, so no round starts until this copy has followed.
wire crc_en;
generate
if (CRC_TABLE != 0) begin : g_crc_en
reg crc_en_reg;
always @(posedge clk) crc_en_reg <= crc_enable;
assign crc_en = crc_en_reg;
end else begin : g_crc_en_direct
assign crc_en = crc_enable;
end
endgenerate
// CRC table: an entry write waiting puts AW and W on hold at the next common burst boundary
wire tbl_req_valid, tbl_req_pending, tbl_beat_ready, tbl_idle;
wire [ADDR_WIDTH-1:0] tbl_req_addr;
wire [BYTES-1:0] tbl_req_strb;
wire [DATA_WIDTH-1:0] tbl_req_data;
// (the queue's output is gated by abort in the table; clear needs no gate: it comes only
// after a cycle of abort, whose drop has emptied the queue, so no entry waits in its cycle.
// Its net then stays out of the entry write's decision, which selects the W register's
// input, spread across the die at 128 bits)
wire ent_want = tbl_req_valid && !ent_b_pend_reg;
// an AW for a burst W has started or finished always goes; one ahead of W only without the
// table, or while no entry waits, the queue has room and W is at most a burst behind
wire aw_w_pos = !aw_w_neg_reg && !aw_w_zero_reg;
wire aw_catch_up = aw_w_neg_reg || (aw_w_zero_reg && w_mid_reg);
// aw_w_diff_reg < (w_mid_reg ? 2 : 1)
wire aw_w_low = !aw_w_pos || (w_mid_reg && aw_w_one_reg);
wire aw_lead_ok = !crc_en || (!ent_want && tbl_beat_ready && aw_w_low);
wire w_owed = aw_w_pos;                         // the next W burst's AW is out
// W's hold reads the entry queue without the abort/clear gate of ent_want: those nets then
// stay out of W's load decision, whose flip-flops (data, strobes, valid) the bus width
// spreads across the die (at 128 bits they were the critical path). The only difference
// is the first cycle of an abort or clear: a waiting entry holds W one cycle more, the
// drop empties the queue at that cycle's edge, and the beats still owed follow.
wire w_hold = tbl_req_pending && !ent_b_pend_reg && !(w_mid_reg || w_owed);
wire w_data_load = fifo_valid && !word_mode_reg && w_free && !w_hold
    && (w_mid_reg || w_owed || tbl_beat_ready);

rm_fifo #(.WIDTH(DATA_WIDTH), .DEPTH(FIFO_DEPTH)) data_fifo (
    .clk(clk), .rst(rst),
    .in_data(m_axi_rdata), .in_valid(r_data), .full(fifo_full),
    .out_data(fifo_data), .out_valid(fifo_valid), .out_ready(w_data_load),
    .empty(fifo_empty)
);

wire aw_free = !aw_valid_reg || m_axi_awready;
wire word_aw_go = word_aw_pend_reg && aw_free;
wire aw_data_go = aw_owed_reg != 0 && aw_plan_valid && !word_mode_reg && aw_free && !clear
    && (aw_catch_up || aw_lead_ok);
wire ent_go = ent_want && !w_mid_reg && aw_w_zero_reg && aw_free && w_free
    && !word_mode_reg && !word_aw_pend_reg && !word_w_pend_reg;
assign aw_step = aw_data_go;
wire word_w_go = word_w_pend_reg && w_free;
wire b_fire = m_axi_bvalid;                     // BREADY is always high
wire ent_b = b_fire && ent_b_pend_reg && ent_b_now_reg;  // the entry write's B
wire b_data = b_fire && !word_mode_reg && !ent_b;
assign b_step = b_data && b_plan_valid;

wire w_is_last = REG_TESTS ? w_is_last_reg : w_left_reg == {{(BW-1){1'b0}}, 1'b1};
wire w_group_end = w_low_reg == MAX_BURST_LEN[MBW-1:0] - 1'b1 || MAX_BURST_LEN == 1;
wire [BYTES-1:0] w_beat_strb = abort ? {BYTES{1'b0}}
    : ((w_first_reg ? first_strb_reg : STRB_ALL) & (w_is_last ? last_strb_reg : STRB_ALL));
// A word is 8-byte aligned (the configuration check refuses anything else, rm_restore
// aligns its table words), so only the 64-bit lane it occupies is selected: a byte-granular
// shift of RDATA was a 64-bit, 8-way select (about 200 LUT4 at 64 bits) for offsets that
// never occur. At 64 bits the lane is the whole bus.
localparam [LSB-1:0] LANE_BITS = {LSB{1'b1}} << 3;
/* verilator lint_off UNUSEDSIGNAL */
wire [LSB-1:0] word_lane = word_addr_reg[LSB-1:0] & LANE_BITS;   // byte offset of the lane
/* verilator lint_on UNUSEDSIGNAL */
wire [BYTES-1:0] word_strb = {{(BYTES-8){1'b0}}, 8'hFF} << word_lane;

/* verilator lint_off UNUSEDSIGNAL */
wire [DATA_WIDTH-1:0] r_shifted = m_axi_rdata >> {word_lane, 3'b000};
/* verilator lint_on UNUSEDSIGNAL */

wire any_hs = (m_axi_arvalid && m_axi_arready) || (m_axi_awvalid && m_axi_awready)
    || (m_axi_wvalid && m_axi_wready) || r_fire || b_fire;
wire idle_now = !ar_valid_reg && rd_bursts_reg == 0 && !word_ar_pend_reg && !word_r_busy_reg
    && aw_owed_reg == 0 && !aw_valid_reg && fifo_empty && !w_valid_reg && b_owed_reg == 0
    && !word_mode_reg && tbl_idle && !ent_b_pend_reg;

// ---------------------------------------------------------------- next state
always @* begin
    total_next = total_reg;
    r_idx_next = r_idx_reg;
    b_idx_next = b_idx_reg;
    w_left_next = w_left_reg;
    w_low_next = w_low_reg;
    w_first_next = w_first_reg;
    first_strb_next = first_strb_reg;
    last_strb_next = last_strb_reg;
    ar_off_next = ar_off_reg;
    aw_off_next = aw_off_reg;
    ar_valid_next = ar_valid_reg && !m_axi_arready;
    ar_addr_next = ar_addr_reg;
    ar_len_next = ar_len_reg;
    ar_size_next = ar_size_reg;
    aw_valid_next = aw_valid_reg && !m_axi_awready;
    aw_addr_next = aw_addr_reg;
    aw_len_next = aw_len_reg;
    aw_size_next = aw_size_reg;
    w_valid_next = w_valid_reg && !m_axi_wready;
    w_data_next = w_data_reg;
    w_strb_next = w_strb_reg;
    w_last_next = w_last_reg;
    word_ar_pend_next = word_ar_pend_reg;
    word_r_busy_next = word_r_busy_reg;
    word_mode_next = word_mode_reg;
    word_aw_pend_next = word_aw_pend_reg;
    word_w_pend_next = word_w_pend_reg;
    word_addr_next = word_addr_reg;
    word_wdata_next = word_wdata_reg;
    word_done_next = 1'b0;
    word_rdata_next = word_rdata_reg;
    word_resp_next = word_resp_reg;
    err_valid_next = 1'b0;
    err_code_next = err_code_reg;
    err_where_next = err_where_reg;
    err_idx_next = err_idx_reg;
    wd_cnt_next = wd_cnt_reg;
    wd_fired_next = wd_fired_reg && !clear;
    burst_issued_next = 1'b0;
    aw_w_diff_next = aw_w_diff_reg;
    w_mid_next = w_mid_reg;
    ent_b_pend_next = ent_b_pend_reg;
    ent_b_ahead_next = ent_b_ahead_reg;

    // run start: the controller starts a run only when the mover is quiet
    if (copy_start) begin
        total_next = copy_beats;
        r_idx_next = 0;
        b_idx_next = 0;
        w_left_next = copy_beats;
        w_low_next = copy_low[MBW-1:0] & (MAX_BURST_LEN[MBW-1:0] - 1'b1);
        w_first_next = 1'b1;
        first_strb_next = copy_first_strb;
        last_strb_next = copy_last_strb;
        ar_off_next = copy_off;
        aw_off_next = copy_off;
    end

    // AR: word reads first (never while a run reads), then data bursts
    if (word_rd) begin
        word_ar_pend_next = 1'b1;
        word_r_busy_next = 1'b1;
        word_addr_next = word_addr;
    end
    if (word_ar_go) begin
        word_ar_pend_next = 1'b0;
        ar_valid_next = 1'b1;
        ar_addr_next = word_addr_reg;
        ar_len_next = 8'd0;
        ar_size_next = 3'd3;
    end else if (ar_issue) begin
        ar_valid_next = 1'b1;
        ar_addr_next = src_base + ar_off_reg;
        ar_len_next = ar_plan_beats[7:0] - 8'd1;
        ar_size_next = FULL_SIZE;
        ar_off_next = (ar_off_reg + ({{(ADDR_WIDTH-9){1'b0}}, ar_plan_beats} << LSB)) & off_mask;
        burst_issued_next = 1'b1;
    end

    // R
    if (r_fire && word_r_busy_reg) begin
        word_r_busy_next = 1'b0;
        word_rdata_next = r_shifted[63:0];
        word_resp_next = m_axi_rresp;
        word_done_next = 1'b1;
    end
    if (r_data) begin
        r_idx_next = r_idx_reg + 1'b1;
        if (r_err && !err_valid_reg) begin
            err_valid_next = 1'b1;
            err_code_next = m_axi_rresp == 2'b11 ? RM_FAULT_READ_DECERR : RM_FAULT_READ_SLVERR;
            err_where_next = W_SRC;
            err_idx_next = r_idx_reg;
        end
    end

    // AW: a word write, else a data burst owed by an issued read
    if (word_wr) begin
        word_mode_next = 1'b1;
        word_aw_pend_next = 1'b1;
        word_w_pend_next = 1'b1;
        word_addr_next = word_addr;
        word_wdata_next = word_wdata;
    end
    if (word_aw_go) begin
        word_aw_pend_next = 1'b0;
        aw_valid_next = 1'b1;
        aw_addr_next = word_addr_reg;
        aw_len_next = 8'd0;
        aw_size_next = 3'd3;
    end else if (ent_go) begin
        // a 4-byte transfer: the entry's neighbours are not even addressed
        aw_valid_next = 1'b1;
        aw_addr_next = tbl_req_addr;
        aw_len_next = 8'd0;
        aw_size_next = 3'd2;
    end else if (aw_data_go) begin
        aw_valid_next = 1'b1;
        aw_addr_next = dst_base + aw_off_reg;
        aw_len_next = aw_plan_beats[7:0] - 8'd1;
        aw_size_next = FULL_SIZE;
        aw_off_next = (aw_off_reg + ({{(ADDR_WIDTH-9){1'b0}}, aw_plan_beats} << LSB)) & off_mask;
    end

    // W: the register changes only when empty or accepted
    if (word_w_go) begin
        word_w_pend_next = 1'b0;
        w_valid_next = 1'b1;
        w_data_next = {(DATA_WIDTH/64){word_wdata_reg}};
        w_strb_next = word_strb;
        w_last_next = 1'b1;
    end else if (ent_go) begin
        w_valid_next = 1'b1;
        w_data_next = tbl_req_data;
        w_strb_next = tbl_req_strb;
        w_last_next = 1'b1;
    end else if (w_data_load) begin
        w_valid_next = 1'b1;
        w_data_next = fifo_data;
        w_strb_next = w_beat_strb;
        w_last_next = w_group_end || w_is_last;
        w_mid_next = !(w_group_end || w_is_last);
        w_left_next = w_left_reg - 1'b1;
        w_low_next = (w_low_reg + 1'b1) & (MAX_BURST_LEN[MBW-1:0] - 1'b1);
        w_first_next = 1'b0;
    end

    // B
    if (b_fire && word_mode_reg) begin
        word_mode_next = 1'b0;
        word_resp_next = m_axi_bresp;
        word_done_next = 1'b1;
    end
    if (b_data) begin
        b_idx_next = b_idx_reg + {{(BW-9){1'b0}}, b_plan_beats};
        if (m_axi_bresp[1] && !err_valid_reg) begin
            err_valid_next = 1'b1;
            err_code_next = m_axi_bresp == 2'b11 ? RM_FAULT_WRITE_DECERR : RM_FAULT_WRITE_SLVERR;
            err_where_next = W_DST;
            err_idx_next = b_idx_reg;
        end
    end

    // entry writes: the B of one is the one after those owed when it went out
    if (ent_go) begin
        ent_b_pend_next = 1'b1;
        ent_b_ahead_next = b_owed_reg + {{(OW-1){1'b0}}, m_axi_awvalid && m_axi_awready}
                                      - {{(OW-1){1'b0}}, b_fire};
    end else if (b_fire && ent_b_pend_reg && !ent_b_now_reg) begin
        ent_b_ahead_next = ent_b_ahead_reg - 1'b1;
    end
    if (ent_b) begin
        ent_b_pend_next = 1'b0;
        if (m_axi_bresp[1] && !err_valid_reg) begin
            err_valid_next = 1'b1;
            err_code_next = m_axi_bresp == 2'b11 ? RM_FAULT_WRITE_DECERR : RM_FAULT_WRITE_SLVERR;
            err_where_next = W_TABLE;
            err_idx_next = 0;
        end
    end
    aw_w_diff_next = aw_w_diff_reg + {{(OW-1){1'b0}}, aw_data_go}
                   - {{(OW-1){1'b0}}, w_data_load && (w_group_end || w_is_last)};

    // counters of outstanding work
    credit_next = credit_reg - (ar_issue ? ar_beats_c : {CW{1'b0}})
                             + {{(CW-1){1'b0}}, w_data_load};
    rd_bursts_next = rd_bursts_reg + {{(RW-1){1'b0}}, ar_issue}
                                   - {{(RW-1){1'b0}}, r_data && m_axi_rlast};
    aw_owed_next = aw_owed_reg + {{(AOW-1){1'b0}}, ar_issue}
                               - {{(AOW-1){1'b0}}, aw_data_go};
    b_owed_next = b_owed_reg + {{(OW-1){1'b0}}, m_axi_awvalid && m_axi_awready}
                             - {{(OW-1){1'b0}}, b_fire};

    quiet_next = idle_now && !word_rd && !word_wr && !copy_start;
    // watchdog: no handshake on any channel for `watchdog` cycles while work is waiting
    if (wd_reload_reg) begin
        wd_cnt_next = watchdog;
    end else if (REG_TESTS ? wd_nz_reg : wd_cnt_reg != 32'd0) begin
        wd_cnt_next = wd_cnt_reg - 32'd1;
        if ((REG_TESTS ? wd_one_reg : wd_cnt_reg == 32'd1) && !wd_fired_reg) begin
            wd_fired_next = 1'b1;
            err_valid_next = 1'b1;
            err_code_next = RM_FAULT_WATCHDOG;
            if (word_ar_pend_reg || word_r_busy_reg || word_mode_reg) begin
                err_where_next = W_WORD;
                err_idx_next = 0;
            end else if (ar_valid_reg || rd_bursts_reg != 0) begin
                err_where_next = W_SRC;
                err_idx_next = r_idx_reg;
            end else begin
                err_where_next = W_DST;
                err_idx_next = b_idx_reg;
            end
        end
    end
    if (clear) begin
        wd_fired_next = 1'b0;
        aw_w_diff_next = 0;
        w_mid_next = 1'b0;
    end
end

// the registered flags' next values (see their declarations)
wire aw_w_up = aw_data_go && !(w_data_load && (w_group_end || w_is_last));
wire aw_w_down = !aw_data_go && w_data_load && (w_group_end || w_is_last);
wire aw_w_m1 = aw_w_diff_reg == {OW{1'b1}};
wire aw_w_two = aw_w_diff_reg == {{(OW-2){1'b0}}, 2'd2};
wire aw_w_neg_next = clear ? 1'b0
    : aw_w_up ? aw_w_neg_reg && !aw_w_m1
    : aw_w_down ? aw_w_neg_reg || aw_w_zero_reg
    : aw_w_neg_reg;
wire aw_w_zero_next = clear ? 1'b1
    : aw_w_up ? aw_w_m1
    : aw_w_down ? aw_w_one_reg
    : aw_w_zero_reg;
wire aw_w_one_next = clear ? 1'b0
    : aw_w_up ? aw_w_zero_reg
    : aw_w_down ? aw_w_two
    : aw_w_one_reg;
wire w_is_last_next = w_data_load ? w_left_reg == {{(BW-2){1'b0}}, 2'd2}
    : copy_start ? copy_beats == {{(BW-1){1'b0}}, 1'b1}
    : w_is_last_reg;

// The run's done flags with the registered tests: the same values as comparing the next
// counts (r_idx_next == total_next, b_idx_next == total_next), but the counts' sums are
// compared from registers and the data beat or response only selects the result, so the
// bus's RVALID / BVALID (a gate in rm_restore, then the decode of R and B) reach the flag
// through a select instead of a 31-bit adder and comparison. Without a beat or response
// the count keeps its value, and the flag too (it holds r_idx_reg == total_reg).
wire [BW-1:0] total_c = copy_start ? copy_beats : total_reg;
wire [BW-1:0] r_idx_up = r_idx_reg + 1'b1;
wire [BW-1:0] b_idx_up = b_idx_reg + {{(BW-9){1'b0}}, b_plan_beats};
wire rd_done_next = r_data ? r_idx_up == total_c
    : copy_start ? copy_beats == {BW{1'b0}} : rd_done_reg;
wire wr_done_next = b_data ? b_idx_up == total_c
    : copy_start ? copy_beats == {BW{1'b0}} : wr_done_reg;

always @(posedge clk) begin
    total_reg <= total_next;
    r_idx_reg <= r_idx_next;
    b_idx_reg <= b_idx_next;
    w_left_reg <= w_left_next;
    w_is_last_reg <= w_is_last_next;
    w_low_reg <= w_low_next;
    w_first_reg <= w_first_next;
    first_strb_reg <= first_strb_next;
    last_strb_reg <= last_strb_next;
    ar_off_reg <= ar_off_next;
    aw_off_reg <= aw_off_next;
    credit_reg <= credit_next;
    rd_bursts_reg <= rd_bursts_next;
    aw_owed_reg <= aw_owed_next;
    b_owed_reg <= b_owed_next;
    ar_valid_reg <= ar_valid_next;
    ar_addr_reg <= ar_addr_next;
    ar_len_reg <= ar_len_next;
    ar_size_reg <= ar_size_next;
    aw_valid_reg <= aw_valid_next;
    aw_addr_reg <= aw_addr_next;
    aw_len_reg <= aw_len_next;
    aw_size_reg <= aw_size_next;
    w_valid_reg <= w_valid_next;
    w_data_reg <= w_data_next;
    w_strb_reg <= w_strb_next;
    w_last_reg <= w_last_next;
    word_ar_pend_reg <= word_ar_pend_next;
    word_r_busy_reg <= word_r_busy_next;
    word_mode_reg <= word_mode_next;
    word_aw_pend_reg <= word_aw_pend_next;
    word_w_pend_reg <= word_w_pend_next;
    word_addr_reg <= word_addr_next;
    word_wdata_reg <= word_wdata_next;
    word_done_reg <= word_done_next;
    word_rdata_reg <= word_rdata_next;
    word_resp_reg <= word_resp_next;
    err_valid_reg <= err_valid_next;
    err_code_reg <= err_code_next;
    err_where_reg <= err_where_next;
    err_idx_reg <= err_idx_next;
    wd_cnt_reg <= wd_cnt_next;
    wd_fired_reg <= wd_fired_next;
    wd_reload_reg <= idle_now || any_hs || watchdog == 32'd0;
    wd_nz_reg <= wd_reload_reg ? watchdog != 32'd0 : wd_nz_reg && !wd_one_reg;
    wd_one_reg <= wd_reload_reg ? watchdog == 32'd1 : wd_cnt_reg == 32'd2;
    burst_issued_reg <= burst_issued_next;
    quiet_reg <= quiet_next;
    aw_w_diff_reg <= aw_w_diff_next;
    aw_w_neg_reg <= aw_w_neg_next;
    aw_w_zero_reg <= aw_w_zero_next;
    aw_w_one_reg <= aw_w_one_next;
    w_mid_reg <= w_mid_next;
    ent_b_pend_reg <= ent_b_pend_next;
    ent_b_ahead_reg <= ent_b_ahead_next;
    ent_b_now_reg <= ent_b_ahead_next == 0;
    rd_done_reg <= REG_TESTS != 0 ? rd_done_next : r_idx_next == total_next;
    wr_done_reg <= REG_TESTS != 0 ? wr_done_next : b_idx_next == total_next;

    if (rst) begin
        total_reg <= 0;
        r_idx_reg <= 0;
        b_idx_reg <= 0;
        w_left_reg <= 0;
        w_is_last_reg <= 1'b0;
        w_low_reg <= 0;
        w_first_reg <= 1'b0;
        credit_reg <= FIFO_DEPTH[CW-1:0];
        rd_bursts_reg <= 0;
        aw_owed_reg <= 0;
        b_owed_reg <= 0;
        ar_valid_reg <= 1'b0;
        aw_valid_reg <= 1'b0;
        w_valid_reg <= 1'b0;
        word_ar_pend_reg <= 1'b0;
        word_r_busy_reg <= 1'b0;
        word_mode_reg <= 1'b0;
        word_aw_pend_reg <= 1'b0;
        word_w_pend_reg <= 1'b0;
        word_done_reg <= 1'b0;
        err_valid_reg <= 1'b0;
        wd_cnt_reg <= 32'd0;
        wd_fired_reg <= 1'b0;
        wd_reload_reg <= 1'b1;
        wd_nz_reg <= 1'b0;
        wd_one_reg <= 1'b0;
        burst_issued_reg <= 1'b0;
        quiet_reg <= 1'b1;
        aw_w_diff_reg <= 0;
        aw_w_neg_reg <= 1'b0;
        aw_w_zero_reg <= 1'b1;
        aw_w_one_reg <= 1'b0;
        w_mid_reg <= 1'b0;
        ent_b_pend_reg <= 1'b0;
        ent_b_ahead_reg <= 0;
        ent_b_now_reg <= 1'b1;
        rd_done_reg <= 1'b1;     // total_reg = r_idx_reg = b_idx_reg = 0
        wr_done_reg <= 1'b1;
    end
end

// ---------------------------------------------------------------- replica CRC table
generate
if (CRC_TABLE != 0) begin : g_crc
rm_crc_table #(.DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .QUEUE_DEPTH(CRC_QUEUE),
               .READY_BELOW(CRC_QUEUE - 2 * CRC_PER_BURST + 1)) crc_table (
    .clk(clk), .rst(rst),
    .enable(crc_en), .replica_base(dst_base), .capacity(crc_capacity),
    .cap_mask(off_mask), .part_mask(crc_part_mask), .table_tail_addr(crc_tail_addr),
    .seed_load(crc_seed_load), .seed_value(crc_seed), .partial(crc_partial),
    .blocks(crc_blocks),
    .copy_start(copy_start), .copy_off(copy_off), .copy_round_first(copy_round_first),
    .copy_round_last(copy_round_last), .copy_first_strb(copy_first_strb),
    .beat_valid(w_data_load && !word_w_go), .beat_data(fifo_data), .beat_strb(w_beat_strb),
    .beat_run_first(w_first_reg), .beat_run_last(w_is_last), .beat_ready(tbl_beat_ready),
    .req_valid(tbl_req_valid), .req_pending(tbl_req_pending),
    .req_addr(tbl_req_addr), .req_strb(tbl_req_strb),
    .req_data(tbl_req_data), .req_take(ent_go),
    .abort(abort), .clear(clear), .idle(tbl_idle)
);
end else begin : g_no_crc
// no unit (CAPABILITIES.CRC_TABLE = 0; the register file keeps crc_enable at 0): no entry
// ever waits, so the entry-write logic above folds away in synthesis
assign tbl_req_valid = 1'b0;
assign tbl_req_pending = 1'b0;
assign tbl_beat_ready = 1'b1;
assign tbl_idle = 1'b1;
assign tbl_req_addr = {ADDR_WIDTH{1'b0}};
assign tbl_req_strb = {BYTES{1'b0}};
assign tbl_req_data = {DATA_WIDTH{1'b0}};
assign crc_partial = 32'd0;
assign crc_blocks = 32'd0;
assign crc_tail_addr = {ADDR_WIDTH{1'b0}};
/* verilator lint_off UNUSEDSIGNAL */
wire unused_crc = &{1'b0, crc_enable, crc_capacity, crc_part_mask, crc_seed_load, crc_seed,
                    copy_round_first, copy_round_last};
/* verilator lint_on UNUSEDSIGNAL */
end
endgenerate

// ---------------------------------------------------------------- outputs
assign copy_rd_done = rd_done_reg;
assign copy_wr_done = wr_done_reg && tbl_idle && !ent_b_pend_reg;
assign burst_issued = burst_issued_reg;
assign word_done = word_done_reg;
assign word_rdata = word_rdata_reg;
assign word_resp = word_resp_reg;
assign word_busy = word_ar_pend_reg || word_r_busy_reg || word_mode_reg;
assign err_valid = err_valid_reg;
assign err_code = err_code_reg;
assign err_where = err_where_reg;
assign err_idx = err_idx_reg;
assign quiet = quiet_reg;

assign m_axi_awid = {ID_WIDTH{1'b0}};
assign m_axi_awaddr = aw_addr_reg;
assign m_axi_awlen = aw_len_reg;
assign m_axi_awsize = aw_size_reg;
assign m_axi_awburst = 2'b01;
assign m_axi_awlock = 1'b0;
assign m_axi_awcache = AXI_CACHE;
assign m_axi_awprot = AXI_PROT;
assign m_axi_awvalid = aw_valid_reg;
assign m_axi_wdata = w_data_reg;
assign m_axi_wstrb = w_strb_reg;
assign m_axi_wlast = w_last_reg;
assign m_axi_wvalid = w_valid_reg;
assign m_axi_bready = 1'b1;
assign m_axi_arid = {ID_WIDTH{1'b0}};
assign m_axi_araddr = ar_addr_reg;
assign m_axi_arlen = ar_len_reg;
assign m_axi_arsize = ar_size_reg;
assign m_axi_arburst = 2'b01;
assign m_axi_arlock = 1'b0;
assign m_axi_arcache = AXI_CACHE;
assign m_axi_arprot = AXI_PROT;
assign m_axi_arvalid = ar_valid_reg;
assign m_axi_rready = 1'b1;

endmodule

`resetall
