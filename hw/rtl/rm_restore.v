// Restore copy mode of the ring-mirror IP: a job of checksummed chunks read from a source
// buffer, each chunk's CRC32C checked against an expected-CRC table in memory, and (unless
// VERIFY_ONLY) written into the ring's data area at its ring offset. docs/hw.md, "Restore
// copy mode"; registers RESTORE_* in hw/regmap.yaml.
//
// A job is RESTORE_LENGTH bytes from RESTORE_SOURCE for ring position RESTORE_POSITION in
// chunks of RESTORE_CHUNK_SIZE (the last one partial), copied in segments: up to
// SEG_CHUNKS chunks when every chunk starts on a beat boundary, else one chunk.
// Per segment:
//   1. plan it chunk by chunk, reading the 8-byte table words that hold its entries
//      (RESTORE_TABLE + 4 * i, two entries a word) into tbuf;
//   2. copy it with one run of this module's own rm_mover (source and destination at the
//      same offsets modulo the ring's capacity: the source base of a run is the segment's
//      source address minus its ring offset, so both sides burst at the same boundaries;
//      RESTORE_SOURCE = RESTORE_POSITION mod 4096 keeps every burst inside 4 KiB on both);
//      a segment that passes the ring's end is two runs. Chunk n+1 is read while chunk n's
//      writes and CRC drain;
//   3. rm_crc32c checksums the beats as the mover hands them to W (the bytes that land),
//      split at chunk boundaries; each result is compared with its entry as it comes: a
//      difference stops the job with CRC_MISMATCH and the chunk's index in
//      RESTORE_FAULT_CHUNK. In a copy, W is held after a chunk's last beat until its
//      verdict, so nothing of the next chunk lands before it matched.
// VERIFY_ONLY runs the same reads with the mover's AW/W/B answered here, never on the bus
// (no write at all), offsets taken as bus addresses (no wrap).
//
// Everything is checked before the first read: chunk size and length (BAD_RESTORE), the
// ring's capacity and alignment, RESTORE_SOURCE + RESTORE_LENGTH and the ring's data area
// within ADDR_WIDTH (ADDR_RANGE), source and ring disjoint (OVERLAP); each table word is
// checked before it is read. A fault (a bus error, the watchdog, a mismatch, ABORT) stops
// the mover (no new read; the write beats still owed carry no byte enable), waits until
// every transaction is answered, then ends the job with RESTORE_STATUS.ERROR.
//
// The module owns the AXI4 master only while a job runs (`bus`); a job starts only while
// mirroring is stopped (`mirror_stopped`), and the register file refuses ENABLE, SYNC and
// address writes while `busy`. SOFT_RESET stops a job like ABORT and leaves the mode idle
// with no fault; `idle` tells the top level when the mirroring engine may act on it.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module rm_restore #(
    parameter DATA_WIDTH = 64,
    parameter ADDR_WIDTH = 40,
    parameter ID_WIDTH = 1,
    parameter MAX_BURST_LEN = 16,
    parameter MAX_OUTSTANDING = 4,
    parameter FIFO_DEPTH = 64,
    parameter [3:0] AXI_CACHE = 4'b1111,
    parameter [2:0] AXI_PROT = 3'b010
) (
    input  wire                    clk,
    input  wire                    rst,

    // register access from ring_mirror_regs (offsets RM_REG_RESTORE_*)
    input  wire                    x_wr,            // a write to a RESTORE_* offset, applied now
    input  wire [7:0]              x_wr_addr,
    input  wire [31:0]             x_wr_data,
    input  wire [3:0]              x_wr_strb,
    input  wire [7:0]              x_rd_addr,       // the offset being read
    input  wire                    x_rd_take,       // the register file takes x_rd_data now
    output wire [31:0]             x_rd_data,       // value at x_rd_addr of a cycle ago

    // the ring (from the register file; stable while busy) and the mirroring engine
    input  wire [ADDR_WIDTH-1:0]   cfg_ring_base,
    input  wire [ADDR_WIDTH-1:0]   cfg_capacity,
    input  wire [ADDR_WIDTH-1:0]   cfg_cap_mask,
    input  wire [31:0]             cfg_watchdog,
    input  wire                    cfg_soft_reset,
    input  wire                    mirror_stopped,  // mirroring idle, ENABLE and SYNC 0

    output wire                    busy,            // a job runs (or drains after a fault)
    output wire                    bus,             // this module drives the AXI4 master
    output wire                    idle,            // no job, nothing outstanding

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

localparam AW = ADDR_WIDTH;
localparam BYTES = DATA_WIDTH / 8;
localparam LSB = $clog2(BYTES);
localparam BW = 34 - LSB;                       // beats of a run: a chunk is < 2^32 bytes
localparam [BYTES-1:0] STRB_ALL = {BYTES{1'b1}};
localparam [AW:0] SPACE = {1'b1, {AW{1'b0}}};   // 2^ADDR_WIDTH
localparam [1:0] W_WORD = 2'd0, W_SRC = 2'd1;

initial begin
    if (DATA_WIDTH < 64 || DATA_WIDTH > 512 || (DATA_WIDTH & (DATA_WIDTH - 1)) != 0) begin
        $error("rm_restore: DATA_WIDTH (%0d) must be a power of two, 64..512", DATA_WIDTH);
        $finish;
    end
    if (ADDR_WIDTH < 32 || ADDR_WIDTH > 64) begin
        $error("rm_restore: ADDR_WIDTH (%0d) must be 32..64", ADDR_WIDTH);
        $finish;
    end
end

// bit 4 is set in every state but S_IDLE (`running`), bit 5 in the three stopping states
// (`stopping`, the mover's `abort`): each is one flip-flop, not a decode of the state
localparam [5:0] S_IDLE = 6'h00, S_CHK1 = 6'h11, S_CHK2 = 6'h12, S_WALK = 6'h13,
                 S_WALK2 = 6'h14, S_LOAD = 6'h15, S_ENT_WAIT = 6'h16, S_PREP = 6'h17,
                 S_GO = 6'h18, S_RUN = 6'h19, S_CRC = 6'h1A, S_NEXT = 6'h1B, S_TAKE = 6'h1C,
                 S_SEG = 6'h1F,
                 S_STOP = 6'h3C, S_FADDR = 6'h3D, S_FIDX = 6'h3E;
// chunks per segment (one mover run, or two at the ring's end): their table entries fit
// the 16 words of the entry buffer whatever the first entry's half
localparam [4:0] SEG_CHUNKS = 5'd30;

// ---------------------------------------------------------------- registers (software)
reg [31:0] cs_reg;                              // chunk size
reg [63:0] src_reg, tbl_reg, pos_reg, len_reg;
reg verify_reg;
reg start_reg, abort_reg;                       // requests, taken by the controller
reg done_reg, error_reg, refused_reg;
reg [7:0] fault_reg;
reg [31:0] crc_seen_reg;
reg [63:0] bytes_reg;
reg [AW-1:0] faddr_reg;
reg [31:0] latch_hi_reg;
reg [31:0] rd_data_reg;

// ---------------------------------------------------------------- controller state
reg [5:0] state_reg, state_next;
reg busy_reg, idle_reg, bus_reg, own_reg;             // outputs and the bus gate (below)
reg own_copy_reg, own_verify_reg;                     // ... its copy / VERIFY_ONLY halves
reg [1:0] tw_resp_reg;                                // the table word's response
reg run_verify_reg;                             // the job only reads
reg sr_reg;                                     // stopping for SOFT_RESET: end without fault
reg [AW-1:0] mask_reg;                          // offsets wrap here (all ones: no wrap)
reg [AW-1:0] dbase_reg;                         // destination base (the ring; 0 to verify)
reg [31:0] idx_reg;                             // the chunk being checked (FAULT_CHUNK)
reg multi_reg;                                  // chunks start on beat boundaries: several
                                                // per segment
reg [4:0] kmax_reg;                             // chunks per segment (SEG_CHUNKS or 1)
reg [BW-1:0] cs_beats_reg;                      // beats of a chunk (multi_reg)
reg cb1_reg;                                    // ... which is one
// the segment being planned or copied
reg [31:0] seg_idx_reg;                         // its first chunk
reg [AW-1:0] c_src_reg, c_off_reg;              // its source address and ring offset
reg [AW-1:0] c_ent_reg;                         // table entry of the next chunk to plan
reg [63:0] rem_reg;                             // bytes of the job not yet planned
reg [4:0] seg_n_reg;                            // its chunks
reg seg0_reg;                                   // ... none yet (seg_n_reg == 0, a flip-flop)
reg [32:0] seg_len_reg;                         // its bytes (< 2^32: SEG_CHUNKS * 2^27)
reg [32:0] seg_last_len_reg;                    // bytes of its last chunk
reg seg_final_reg;                              // it ends the job
reg [32:0] wk_len_reg;                          // bytes of the chunk being planned
reg wk_last_reg;                                // ... the job's last
reg e2_reg;                                     // the first entry is a word's upper half
reg [3:0] tw_reg;                               // entry words read for the segment
reg [63:0] tbuf [0:15];                         // those words (LUT RAM)
reg pf_reg;                                     // a table-word fault ends the segment
reg [7:0] pf_code_reg;                          // before its chunk; raised when the next
                                                // segment starts with it (same word)
reg [32:0] len_a_reg;                           // bytes of the segment's first run
reg wraps_reg;                                  // it passes the ring's end: two runs
// the ring's configuration, latched while no job runs (the register file refuses its
// writes while `busy`), so the job's checks and values use flip-flops of this module
reg [AW-1:0] rb_reg, cap_reg, cmask_reg;
// checks: the end sums are kept up to date while no job runs (the job's own registers
// are refused from START on), their compares are made in S_CHK1, the fault in S_CHK2
reg [AW:0] k_src_end_reg, k_ring_end_reg;
reg k_bad_size_reg, k_big_reg, k_cap_reg, k_align_reg, k_hi_reg, k_multi_reg;
reg k_range_reg, k_overlap_reg;
reg k_ent_range_reg, k_ent_overlap_reg;
// the run being copied
reg [AW-1:0] r_off_reg, r_sb_reg;
reg [32:0] r_len_reg;
reg r_last_reg;
reg [BW-1:0] r_beats_reg;
reg [BW-1:0] r_base_reg;                        // beats of the segment before this run
reg [BYTES-1:0] r_fstrb_reg, r_lstrb_reg;
reg [BW-1:0] w_cnt_reg;                         // beats the mover handed to W in this run
// the write side: chunk boundaries, and the hold between two chunks of a copy
reg w_new_reg;                                  // the next beat starts a chunk
reg [BW-1:0] wc_reg;                            // beats left in the chunk (multi_reg)
reg gate_reg;                                   // W held until the last chunk's verdict
reg kill_reg;                                   // W beats go out with no byte enable
// the verdicts: the CRC results in chunk order, with their entries registered (p_),
// compared (q_), then acted on, so the comparison never drives the counters' enables
reg [4:0] vi_reg;                               // entry index in tbuf of the next CRC result
reg p_valid_reg, p_end_reg;
reg [31:0] p_crc_reg, p_exp_reg;
reg q_valid_reg, q_end_reg, q_match_reg;
reg [31:0] q_crc_reg;
reg [AW-1:0] v_src_reg;                         // the acted-on chunk's first source byte
reg seg_ok_reg;                                 // every chunk of the segment matched
// mover requests
reg mv_start_reg, mv_word_reg, mv_clear_reg;
// fault detail being worked out
reg [1:0] e_where_reg;
reg [BW-1:0] e_idx_reg;
reg [BW:0] f_diff_reg;                          // ... minus a chunk's beats (borrow on top)
reg f_ph_reg;                                   // f_diff_reg is up to date
reg [4:0] f_j_reg;                              // the faulting beat's chunk in the segment

// ---------------------------------------------------------------- the mover
wire mv_wr_done, mv_word_done, mv_quiet, mv_err_valid;
/* verilator lint_off UNUSEDSIGNAL */
wire mv_rd_done, mv_burst, mv_word_busy;
wire [31:0] mv_crc_partial, mv_crc_blocks;
wire [AW-1:0] mv_crc_tail_addr;
/* verilator lint_on UNUSEDSIGNAL */
wire [63:0] mv_word_rdata;
wire [1:0] mv_word_resp, mv_err_where;
wire [7:0] mv_err_code;
wire [BW-1:0] mv_err_idx;
wire mv_abort = state_reg[5];

wire [ID_WIDTH-1:0] mv_awid;
wire [AW-1:0] mv_awaddr;
wire [7:0] mv_awlen;
wire [2:0] mv_awsize;
wire [1:0] mv_awburst;
wire mv_awlock;
wire [3:0] mv_awcache;
wire [2:0] mv_awprot;
wire mv_awvalid, mv_awready;
wire [DATA_WIDTH-1:0] mv_wdata;
wire [BYTES-1:0] mv_wstrb;
wire mv_wlast, mv_wvalid, mv_wready;
wire [1:0] mv_bresp;
wire mv_bvalid;
/* verilator lint_off UNUSEDSIGNAL */
wire mv_bready;
/* verilator lint_on UNUSEDSIGNAL */

rm_mover #(
    .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(AW), .ID_WIDTH(ID_WIDTH),
    .MAX_BURST_LEN(MAX_BURST_LEN), .MAX_OUTSTANDING(MAX_OUTSTANDING),
    .FIFO_DEPTH(FIFO_DEPTH), .CRC_TABLE(0), .REG_TESTS(1),
    .AXI_CACHE(AXI_CACHE), .AXI_PROT(AXI_PROT), .BW(BW)
) mover (
    .clk(clk), .rst(rst),
    .src_base(r_sb_reg), .dst_base(dbase_reg), .off_mask(mask_reg), .watchdog(cfg_watchdog),
    .copy_start(mv_start_reg), .copy_off({r_off_reg[AW-1:LSB], {LSB{1'b0}}}),
    .copy_beats(r_beats_reg), .copy_first_strb(r_fstrb_reg), .copy_last_strb(r_lstrb_reg),
    .copy_round_first(1'b0), .copy_round_last(1'b0),
    .copy_rd_done(mv_rd_done), .copy_wr_done(mv_wr_done), .burst_issued(mv_burst),
    .word_rd(mv_word_reg), .word_wr(1'b0), .word_addr({c_ent_reg[AW-1:3], 3'b000}),
    .word_wdata(64'd0), .word_done(mv_word_done), .word_rdata(mv_word_rdata),
    .word_resp(mv_word_resp), .word_busy(mv_word_busy),
    .crc_enable(1'b0), .crc_capacity({AW{1'b0}}), .crc_part_mask({AW{1'b0}}),
    .crc_seed_load(1'b0), .crc_seed(32'd0), .crc_partial(mv_crc_partial),
    .crc_blocks(mv_crc_blocks), .crc_tail_addr(mv_crc_tail_addr),
    .abort(mv_abort), .clear(mv_clear_reg),
    .err_valid(mv_err_valid), .err_code(mv_err_code), .err_where(mv_err_where),
    .err_idx(mv_err_idx), .quiet(mv_quiet),
    .m_axi_awid(mv_awid), .m_axi_awaddr(mv_awaddr), .m_axi_awlen(mv_awlen),
    .m_axi_awsize(mv_awsize), .m_axi_awburst(mv_awburst), .m_axi_awlock(mv_awlock),
    .m_axi_awcache(mv_awcache), .m_axi_awprot(mv_awprot),
    .m_axi_awvalid(mv_awvalid), .m_axi_awready(mv_awready),
    .m_axi_wdata(mv_wdata), .m_axi_wstrb(mv_wstrb), .m_axi_wlast(mv_wlast),
    .m_axi_wvalid(mv_wvalid), .m_axi_wready(mv_wready),
    .m_axi_bresp(mv_bresp), .m_axi_bvalid(mv_bvalid), .m_axi_bready(mv_bready),
    .m_axi_arid(m_axi_arid), .m_axi_araddr(m_axi_araddr), .m_axi_arlen(m_axi_arlen),
    .m_axi_arsize(m_axi_arsize), .m_axi_arburst(m_axi_arburst), .m_axi_arlock(m_axi_arlock),
    .m_axi_arcache(m_axi_arcache), .m_axi_arprot(m_axi_arprot),
    .m_axi_arvalid(m_axi_arvalid), .m_axi_arready(m_axi_arready && own_reg),
    .m_axi_rdata(m_axi_rdata), .m_axi_rresp(m_axi_rresp), .m_axi_rlast(m_axi_rlast),
    .m_axi_rvalid(m_axi_rvalid && own_reg), .m_axi_rready(m_axi_rready)
);

// VERIFY_ONLY: the mover's writes are answered here (one OKAY per burst once its AW and
// its last beat were taken) and never reach the bus. In a copy, W is held after a chunk's
// last beat until that chunk's verdict (gate_reg), so no byte of a chunk lands before the
// chunk before it matched; a beat held when the job stops goes out with no byte enable
// (kill_reg, set only while the gate hides the beat, so a presented beat never changes). The response is a flip-flop decided
// from the counts of the next cycle (an 8-bit compare in front of the mover's B logic
// was the post-route critical path)
reg [7:0] v_aw_reg, v_wl_reg;                   // AWs, last beats not yet answered
reg v_bvalid_reg;
wire [7:0] v_aw_next = v_aw_reg + {7'd0, run_verify_reg && mv_awvalid}
                     - {7'd0, v_bvalid_reg};
wire [7:0] v_wl_next = v_wl_reg + {7'd0, run_verify_reg && mv_wvalid && mv_wlast}
                     - {7'd0, v_bvalid_reg};
assign mv_awready = own_verify_reg || (m_axi_awready && own_copy_reg);
assign mv_wready = own_verify_reg || (m_axi_wready && own_copy_reg && !gate_reg);
assign mv_bvalid = v_bvalid_reg || (m_axi_bvalid && own_copy_reg);
assign mv_bresp = m_axi_bresp & {2{own_copy_reg}};
assign m_axi_awid = mv_awid;
assign m_axi_awaddr = mv_awaddr;
assign m_axi_awlen = mv_awlen;
assign m_axi_awsize = mv_awsize;
assign m_axi_awburst = mv_awburst;
assign m_axi_awlock = mv_awlock;
assign m_axi_awcache = mv_awcache;
assign m_axi_awprot = mv_awprot;
assign m_axi_awvalid = mv_awvalid && !run_verify_reg;
assign m_axi_wdata = mv_wdata;
assign m_axi_wstrb = kill_reg ? {BYTES{1'b0}} : mv_wstrb;
assign m_axi_wlast = mv_wlast;
assign m_axi_wvalid = mv_wvalid && !run_verify_reg && !gate_reg;
assign m_axi_bready = 1'b1;

always @(posedge clk) begin
    v_aw_reg <= v_aw_next;
    v_wl_reg <= v_wl_next;
    v_bvalid_reg <= run_verify_reg && v_aw_next != 8'd0 && v_wl_next != 8'd0;
    if (rst || mv_clear_reg) begin
        v_aw_reg <= 8'd0;
        v_wl_reg <= 8'd0;
        v_bvalid_reg <= 1'b0;
    end
end

// ---------------------------------------------------------------- the CRC check
// Chunk boundaries on the write side: a segment's first beat starts a chunk; with several
// chunks per segment every chunk but the job's last has cs_beats beats; the segment's last
// beat ends its last chunk (flagged in s_user, so its verdict closes the segment).
wire w_beat = mv_wvalid && mv_wready;           // a beat the destination receives
wire seg_end_beat = r_last_reg && w_cnt_reg == r_beats_reg - 1'b1;
wire w_chunk_end = seg_end_beat || (multi_reg && (w_new_reg ? cb1_reg : wc_reg == 1));
wire crc_valid;
wire [31:0] crc_value;
wire crc_seg_end;
rm_crc32c #(.DATA_WIDTH(DATA_WIDTH), .USER_WIDTH(1)) crc (
    .clk(clk), .rst(rst || mv_clear_reg),
    .s_valid(w_beat), .s_data(mv_wdata), .s_strb(mv_wstrb),
    .s_first(w_new_reg), .s_last(w_chunk_end),
    .s_seed(32'd0), .s_user(seg_end_beat),
    .m_valid(crc_valid), .m_crc(crc_value), .m_user(crc_seg_end)
);
// the expected CRC of the next result's chunk
wire [63:0] v_word = tbuf[vi_reg[4:1]];
wire [31:0] v_expected = vi_reg[0] ? v_word[63:32] : v_word[31:0];

// ---------------------------------------------------------------- register writes
function [31:0] merge(input [31:0] old, input [31:0] data, input [3:0] strb);
    integer b;
    begin
        for (b = 0; b < 4; b = b + 1) begin
            merge[b*8 +: 8] = strb[b] ? data[b*8 +: 8] : old[b*8 +: 8];
        end
    end
endfunction

wire running = state_reg[4];
// the job's configuration is fixed from START on: the checks' sums are computed from it
// while no job runs, the last time in the cycle start_reg is set
wire cfg_locked = running || start_reg;
wire wr_cfg = x_wr && (x_wr_addr == RM_REG_RESTORE_CHUNK_SIZE
    || (x_wr_addr >= RM_REG_RESTORE_SOURCE_LO && x_wr_addr <= RM_REG_RESTORE_LENGTH_HI));
wire [31:0] wd = x_wr_data;
wire [3:0] ws = x_wr_strb;
wire ctl_wr = x_wr && x_wr_addr == RM_REG_RESTORE_CONTROL;
wire start_wr = ctl_wr && ws[0] && wd[RM_RESTORE_CONTROL_START_LSB];
wire abort_wr = ctl_wr && ws[0] && wd[RM_RESTORE_CONTROL_ABORT_LSB];

always @(posedge clk) begin
    if (wr_cfg && cfg_locked) refused_reg <= 1'b1;
    if (wr_cfg && !cfg_locked) begin
        case (x_wr_addr)
            RM_REG_RESTORE_CHUNK_SIZE: cs_reg <= merge(cs_reg, wd, ws);
            RM_REG_RESTORE_SOURCE_LO: src_reg[31:0] <= merge(src_reg[31:0], wd, ws);
            RM_REG_RESTORE_SOURCE_HI: src_reg[63:32] <= merge(src_reg[63:32], wd, ws);
            RM_REG_RESTORE_TABLE_LO: tbl_reg[31:0] <= merge(tbl_reg[31:0], wd, ws);
            RM_REG_RESTORE_TABLE_HI: tbl_reg[63:32] <= merge(tbl_reg[63:32], wd, ws);
            RM_REG_RESTORE_POSITION_LO: pos_reg[31:0] <= merge(pos_reg[31:0], wd, ws);
            RM_REG_RESTORE_POSITION_HI: pos_reg[63:32] <= merge(pos_reg[63:32], wd, ws);
            RM_REG_RESTORE_LENGTH_LO: len_reg[31:0] <= merge(len_reg[31:0], wd, ws);
            RM_REG_RESTORE_LENGTH_HI: len_reg[63:32] <= merge(len_reg[63:32], wd, ws);
            default: ;
        endcase
    end
    if (ctl_wr && ws[0] && !running) verify_reg <= wd[RM_RESTORE_CONTROL_VERIFY_ONLY_LSB];
    if (x_wr && x_wr_addr == RM_REG_RESTORE_STATUS && ws[0]
            && wd[RM_RESTORE_STATUS_REFUSED_LSB]) begin
        refused_reg <= 1'b0;
    end
    if (rst) begin
        cs_reg <= RM_RST_RESTORE_CHUNK_SIZE;
        src_reg <= RM_RST_RESTORE_SOURCE;
        tbl_reg <= RM_RST_RESTORE_TABLE;
        pos_reg <= RM_RST_RESTORE_POSITION;
        len_reg <= RM_RST_RESTORE_LENGTH;
        verify_reg <= 1'b0;
        refused_reg <= 1'b0;
    end
end

// ---------------------------------------------------------------- register reads
wire [31:0] status_word = ({31'd0, running} << RM_RESTORE_STATUS_BUSY_LSB)
    | ({31'd0, done_reg} << RM_RESTORE_STATUS_DONE_LSB)
    | ({31'd0, error_reg} << RM_RESTORE_STATUS_ERROR_LSB)
    | ({31'd0, refused_reg} << RM_RESTORE_STATUS_REFUSED_LSB)
    | ({24'd0, fault_reg} << RM_RESTORE_STATUS_FAULT_LSB);
wire [31:0] control_word = ({31'd0, start_reg || running} << RM_RESTORE_CONTROL_START_LSB)
    | ({31'd0, verify_reg} << RM_RESTORE_CONTROL_VERIFY_ONLY_LSB);
/* verilator lint_off UNUSEDSIGNAL */
wire [127:0] faddr_x = {{(128-AW){1'b0}}, faddr_reg};     // zero-extended (ADDR_WIDTH may be 64)
wire [127:0] cap_x = {{(128-AW){1'b0}}, cap_reg};
wire [127:0] off_x = {{(128-AW){1'b0}}, c_off_reg};
wire [127:0] lena_x = {95'd0, len_a_reg};
/* verilator lint_on UNUSEDSIGNAL */
wire [63:0] faddr64 = faddr_x[63:0];
reg [31:0] hi_cand_reg;                         // _HI of the _LO value in rd_data_reg
always @(posedge clk) begin
    case (x_rd_addr)
        RM_REG_RESTORE_CONTROL: rd_data_reg <= control_word;
        RM_REG_RESTORE_STATUS: rd_data_reg <= status_word;
        RM_REG_RESTORE_CHUNK_SIZE: rd_data_reg <= cs_reg;
        RM_REG_RESTORE_SOURCE_LO: rd_data_reg <= src_reg[31:0];
        RM_REG_RESTORE_SOURCE_HI: rd_data_reg <= src_reg[63:32];
        RM_REG_RESTORE_TABLE_LO: rd_data_reg <= tbl_reg[31:0];
        RM_REG_RESTORE_TABLE_HI: rd_data_reg <= tbl_reg[63:32];
        RM_REG_RESTORE_POSITION_LO: rd_data_reg <= pos_reg[31:0];
        RM_REG_RESTORE_POSITION_HI: rd_data_reg <= pos_reg[63:32];
        RM_REG_RESTORE_LENGTH_LO: rd_data_reg <= len_reg[31:0];
        RM_REG_RESTORE_LENGTH_HI: rd_data_reg <= len_reg[63:32];
        // the chunk index stops moving at a fault: it is RESTORE_FAULT_CHUNK as it is
        RM_REG_RESTORE_FAULT_CHUNK: rd_data_reg <= idx_reg;
        RM_REG_RESTORE_CRC_SEEN: rd_data_reg <= crc_seen_reg;
        RM_REG_RESTORE_BYTES_LO: rd_data_reg <= bytes_reg[31:0];
        RM_REG_RESTORE_FAULT_ADDR_LO: rd_data_reg <= faddr64[31:0];
        RM_REG_RESTORE_BYTES_HI, RM_REG_RESTORE_FAULT_ADDR_HI: rd_data_reg <= latch_hi_reg;
        default: rd_data_reg <= 32'd0;
    endcase
    hi_cand_reg <= x_rd_addr == RM_REG_RESTORE_BYTES_LO ? bytes_reg[63:32] : faddr64[63:32];
    // reading a _LO word captures its _HI word (a 32-bit CPU reads a consistent value)
    if (x_rd_take && (x_rd_addr == RM_REG_RESTORE_BYTES_LO
                      || x_rd_addr == RM_REG_RESTORE_FAULT_ADDR_LO)) begin
        latch_hi_reg <= hi_cand_reg;
    end
    if (rst) latch_hi_reg <= 32'd0;
end

always @(posedge clk) begin
    if (!running) begin
        rb_reg <= cfg_ring_base;
        cap_reg <= cfg_capacity;
        cmask_reg <= cfg_cap_mask;
        k_ring_end_reg <= {1'b0, cfg_ring_base} + {1'b0, cfg_capacity};
        k_src_end_reg <= {1'b0, src_reg[AW-1:0]} + {1'b0, len_reg[AW-1:0]};
    end
end

// ---------------------------------------------------------------- controller
wire stop_req = abort_reg || cfg_soft_reset;
wire stopping = state_reg[5];
// the mover's quiet flag is a cycle old: it does not yet cover a request made in the
// previous cycle (word read, run start), which the mover sees now, nor a read burst its
// planner issued in the last cycle before `abort` (a run's first burst: the planner
// counts as quiet while it prepares), hence not in S_STOP's first cycle
reg stop_old_reg;                               // S_STOP since the previous cycle
wire stop_quiet = mv_quiet && stop_old_reg && !mv_clear_reg && !mv_word_reg
    && !mv_start_reg;
wire [AW-1:0] ent_word = {c_ent_reg[AW-1:3], 3'b000};
wire [AW:0] ent_end = {1'b0, ent_word} + 'd8;
wire [32:0] cs33 = {1'b0, cs_reg};
/* verilator lint_off UNUSEDSIGNAL */
wire [127:0] cs_x = {96'd0, cs_reg};
wire [127:0] seglen_x = {95'd0, seg_len_reg};
/* verilator lint_on UNUSEDSIGNAL */
wire [AW:0] a_end = {1'b0, c_off_reg} + seglen_x[AW:0];
wire [LSB-1:0] r_lo = r_off_reg[LSB-1:0];
wire [33:0] r_span = {{(34-LSB){1'b0}}, r_lo} + {1'b0, r_len_reg};  // lanes before + bytes
/* verilator lint_off UNUSEDSIGNAL */
wire [33:0] r_end_idx = r_span - 34'd1;
wire [BYTES-1:0] r_lstrb = STRB_ALL >> ({LSB{1'b1}} - r_end_idx[LSB-1:0]);
wire [33:0] r_beats_w = (r_span + {{(34-LSB){1'b0}}, {LSB{1'b1}}}) >> LSB;
/* verilator lint_on UNUSEDSIGNAL */
// planning a segment, chunk by chunk: a chunk whose entry starts an 8-byte word (or the
// segment's first chunk) reads that word; a chunk is taken once its entry is in tbuf
wire wk_need_word = seg0_reg || !c_ent_reg[2];
wire [4:0] seg_n_inc = seg_n_reg + 5'd1;
wire wk_seg_end = wk_last_reg || seg_n_inc == kmax_reg;
wire wk_take = (state_reg == S_WALK2 && !wk_need_word) || (state_reg == S_TAKE && !tw_resp_reg[1]);
wire [7:0] ent_fault = k_ent_range_reg ? RM_FAULT_ADDR_RANGE : RM_FAULT_OVERLAP;
wire [7:0] word_fault = tw_resp_reg == 2'b11 ? RM_FAULT_READ_DECERR : RM_FAULT_READ_SLVERR;
// a chunk's verdict: its CRC (results come in chunk order) against its table entry
wire verdict = q_valid_reg && running && !stopping;
wire v_match = q_match_reg;

always @* begin
    state_next = state_reg;
    case (state_reg)
        S_IDLE: if (start_reg) state_next = mirror_stopped ? S_CHK1 : S_IDLE;
        S_CHK1: state_next = S_CHK2;
        S_CHK2: state_next = S_WALK;
        S_WALK: state_next = S_WALK2;
        S_WALK2: state_next = wk_need_word ? S_ENT_WAIT : (wk_seg_end ? S_SEG : S_WALK);
        S_ENT_WAIT: if (mv_word_done) state_next = S_TAKE;
        S_TAKE: state_next = wk_seg_end ? S_SEG : S_WALK;
        S_SEG: state_next = S_LOAD;
        S_LOAD: state_next = S_PREP;
        S_PREP: state_next = S_GO;
        S_GO: if (mv_quiet) state_next = S_RUN;
        // (copy_start reaches the mover a cycle after S_GO: its done flag is the new
        // run's from the cycle after that)
        S_RUN: if (mv_wr_done && !mv_start_reg) state_next = r_last_reg ? S_CRC : S_PREP;
        S_CRC: if (seg_ok_reg) state_next = S_NEXT;
        S_NEXT: state_next = seg_final_reg ? S_IDLE : S_WALK;
        S_FADDR: state_next = S_FIDX;
        S_FIDX: if (!multi_reg || e_where_reg == W_WORD || (f_ph_reg && f_diff_reg[BW]))
                    state_next = S_STOP;
        S_STOP: if (stop_quiet) state_next = S_IDLE;
        default: state_next = S_IDLE;
    endcase
end

always @(posedge clk) begin
    if (state_reg == S_ENT_WAIT && mv_word_done) tbuf[tw_reg] <= mv_word_rdata;
end

always @(posedge clk) begin
    p_valid_reg <= crc_valid;
    p_end_reg <= crc_seg_end;
    p_crc_reg <= crc_value;
    p_exp_reg <= v_expected;
    q_valid_reg <= p_valid_reg;
    q_end_reg <= p_end_reg;
    q_crc_reg <= p_crc_reg;
    q_match_reg <= p_crc_reg == p_exp_reg;
    if (rst) begin
        p_valid_reg <= 1'b0;
        q_valid_reg <= 1'b0;
    end
end

always @(posedge clk) begin
    state_reg <= state_next;
    mv_start_reg <= 1'b0;
    mv_word_reg <= 1'b0;
    mv_clear_reg <= 1'b0;
    if (start_wr && !running) start_reg <= 1'b1;
    if (abort_wr && running) abort_reg <= 1'b1;

    // the write side: chunk boundaries; in a copy, hold W after a chunk's last beat
    if (w_beat) begin
        w_cnt_reg <= w_cnt_reg + 1'b1;
        w_new_reg <= w_chunk_end;
        wc_reg <= (w_new_reg ? cs_beats_reg : wc_reg) - 1'b1;
        if (w_chunk_end && !seg_end_beat && !run_verify_reg && !stopping) gate_reg <= 1'b1;
    end
    // the verdicts
    if (crc_valid) vi_reg <= vi_reg + 5'd1;
    if (verdict) begin
        crc_seen_reg <= q_crc_reg;
        gate_reg <= 1'b0;
        if (v_match) begin
            idx_reg <= idx_reg + 32'd1;
            bytes_reg <= bytes_reg + {31'd0, q_end_reg ? seg_last_len_reg : cs33};
            v_src_reg <= v_src_reg + cs_x[AW-1:0];
            if (q_end_reg) seg_ok_reg <= 1'b1;
        end else begin
            fault_reg <= RM_FAULT_CRC_MISMATCH;
            faddr_reg <= v_src_reg;
            kill_reg <= gate_reg;            // the next chunk's first beat never lands
            state_reg <= S_STOP;
        end
    end
    // stopping: a beat the gate held goes out with no byte enable
    if (stopping) begin
        gate_reg <= 1'b0;
        if (gate_reg) kill_reg <= 1'b1;
    end
    if (wk_take) begin
        seg_n_reg <= seg_n_inc;
        seg0_reg <= 1'b0;
        seg_len_reg <= seg_len_reg + wk_len_reg;
        seg_last_len_reg <= wk_len_reg;
        seg_final_reg <= wk_last_reg;
        rem_reg <= rem_reg - {31'd0, wk_len_reg};
        c_ent_reg <= c_ent_reg + 'd4;
    end

    case (state_reg)
        S_IDLE: begin
            if (start_reg) begin
                start_reg <= 1'b0;
                abort_reg <= 1'b0;
                done_reg <= 1'b0;
                error_reg <= 1'b0;
                fault_reg <= RM_FAULT_NONE;
                idx_reg <= 32'd0;
                crc_seen_reg <= 32'd0;
                bytes_reg <= 64'd0;
                faddr_reg <= {AW{1'b0}};
                sr_reg <= 1'b0;
                run_verify_reg <= verify_reg;
                if (!mirror_stopped) begin
                    error_reg <= 1'b1;
                    fault_reg <= RM_FAULT_MODE_CONFLICT;
                end
            end
            if (cfg_soft_reset) begin
                done_reg <= 1'b0;
                error_reg <= 1'b0;
                fault_reg <= RM_FAULT_NONE;
                bytes_reg <= 64'd0;
                start_reg <= 1'b0;
            end
        end
        S_CHK1: begin
            k_range_reg <= k_src_end_reg > SPACE || (!run_verify_reg && k_ring_end_reg > SPACE);
            k_overlap_reg <= !run_verify_reg && !(k_src_end_reg <= {1'b0, rb_reg}
                                                 || k_ring_end_reg <= {1'b0, src_reg[AW-1:0]});
            k_bad_size_reg <= cs_reg[2:0] != 3'd0 || cs_reg == 32'd0 || len_reg == 64'd0;
            k_big_reg <= !run_verify_reg && len_reg > cap_x[63:0];
            k_cap_reg <= !run_verify_reg && (cap_reg < 'd4096 || (cap_reg & cmask_reg) != 0);
            k_align_reg <= tbl_reg[1:0] != 2'd0 || (!run_verify_reg
                && (src_reg[11:0] != pos_reg[11:0] || rb_reg[11:0] != 12'd0));
            k_hi_reg <= (src_reg >> AW) != 64'd0 || (len_reg >> AW) != 64'd0
                     || (tbl_reg >> AW) != 64'd0;
            // every chunk starts on a beat boundary (source and ring: the same offsets
            // modulo 4096), and SEG_CHUNKS of them stay below 2^32 bytes
            k_multi_reg <= cs_reg[LSB-1:0] == {LSB{1'b0}} && src_reg[LSB-1:0] == {LSB{1'b0}}
                        && cs_reg[31:27] == 5'd0;
        end
        S_CHK2: begin
            // the job's fixed values; a configuration fault ends it before any access
            mask_reg <= run_verify_reg ? {AW{1'b1}} : cmask_reg;
            dbase_reg <= run_verify_reg ? {AW{1'b0}} : rb_reg;
            c_off_reg <= run_verify_reg ? src_reg[AW-1:0] : pos_reg[AW-1:0] & cmask_reg;
            c_src_reg <= src_reg[AW-1:0];
            c_ent_reg <= tbl_reg[AW-1:0];
            rem_reg <= len_reg;
            idx_reg <= 32'd0;
            seg_idx_reg <= 32'd0;
            seg_n_reg <= 5'd0;
            seg0_reg <= 1'b1;
            seg_len_reg <= 33'd0;
            tw_reg <= 4'd0;
            pf_reg <= 1'b0;
            multi_reg <= k_multi_reg;
            kmax_reg <= k_multi_reg ? SEG_CHUNKS : 5'd1;
            cs_beats_reg <= cs_x[LSB +: BW];
            cb1_reg <= cs_x[LSB +: BW] == {{(BW-1){1'b0}}, 1'b1};
            if (k_bad_size_reg || k_big_reg) begin
                fault_reg <= RM_FAULT_BAD_RESTORE;
            end else if (k_cap_reg) begin
                fault_reg <= RM_FAULT_BAD_CAPACITY;
            end else if (k_align_reg) begin
                fault_reg <= RM_FAULT_BAD_ALIGNMENT;
            end else if (k_hi_reg || k_range_reg) begin
                fault_reg <= RM_FAULT_ADDR_RANGE;
            end else if (k_overlap_reg) begin
                fault_reg <= RM_FAULT_OVERLAP;
            end
        end
        S_WALK: begin
            if (fault_reg != RM_FAULT_NONE) begin
                // a configuration fault: nothing was issued
                error_reg <= 1'b1;
                state_reg <= S_IDLE;
            end else if (pf_reg) begin
                // the previous segment ended before this chunk: its entry's word fault
                fault_reg <= pf_code_reg;
                faddr_reg <= ent_word;
                state_reg <= S_STOP;
            end
            if (seg0_reg) e2_reg <= c_ent_reg[2];
            wk_len_reg <= rem_reg <= {32'd0, cs_reg} ? rem_reg[32:0] : cs33;
            wk_last_reg <= rem_reg <= {32'd0, cs_reg};
            k_ent_range_reg <= ent_end > SPACE;
            k_ent_overlap_reg <= !run_verify_reg && !(ent_end <= {1'b0, rb_reg}
                                                     || k_ring_end_reg <= {1'b0, ent_word});
        end
        S_WALK2: if (wk_need_word) begin
            if (k_ent_range_reg || k_ent_overlap_reg) begin
                if (seg0_reg) begin
                    fault_reg <= ent_fault;
                    faddr_reg <= ent_word;
                    state_reg <= S_STOP;
                end else begin
                    pf_reg <= 1'b1;
                    pf_code_reg <= ent_fault;
                    state_reg <= S_SEG;
                end
            end else begin
                mv_word_reg <= 1'b1;
            end
        end
        S_ENT_WAIT: if (mv_word_done) begin
            tw_reg <= tw_reg + 4'd1;
            tw_resp_reg <= mv_word_resp;
        end
        S_TAKE: begin
            // the word's response a cycle later: the mover's word_done never drives the
            // planning counters' enables
            if (tw_resp_reg[1]) begin
                if (seg0_reg) begin
                    fault_reg <= word_fault;
                    faddr_reg <= ent_word;
                    state_reg <= S_STOP;
                end else begin
                    pf_reg <= 1'b1;
                    pf_code_reg <= word_fault;
                    state_reg <= S_SEG;
                end
            end
        end
        S_SEG: begin
            wraps_reg <= !run_verify_reg && a_end > {1'b0, cap_reg};
            len_a_reg <= !run_verify_reg && a_end > {1'b0, cap_reg}
                       ? cap_x[32:0] - off_x[32:0] : seg_len_reg;
        end
        S_LOAD: begin
            r_off_reg <= c_off_reg;
            r_sb_reg <= c_src_reg - c_off_reg;
            r_len_reg <= len_a_reg;
            r_last_reg <= !wraps_reg;
            r_base_reg <= {BW{1'b0}};
            w_new_reg <= 1'b1;
            vi_reg <= {4'd0, e2_reg};
            v_src_reg <= c_src_reg;
            seg_ok_reg <= 1'b0;
            gate_reg <= 1'b0;
            kill_reg <= 1'b0;
        end
        S_PREP: begin
            r_beats_reg <= r_beats_w[BW-1:0];
            r_fstrb_reg <= STRB_ALL << r_lo;
            r_lstrb_reg <= r_lstrb;
        end
        S_GO: if (mv_quiet) begin
            mv_start_reg <= 1'b1;
            w_cnt_reg <= {BW{1'b0}};
        end
        S_RUN: if (mv_wr_done && !mv_start_reg && !r_last_reg) begin
            // the segment continues at the ring's start
            r_off_reg <= {AW{1'b0}};
            r_sb_reg <= c_src_reg + lena_x[AW-1:0];
            r_len_reg <= seg_len_reg - len_a_reg;
            r_base_reg <= r_beats_reg;
            r_last_reg <= 1'b1;
        end
        S_NEXT: begin
            seg_idx_reg <= seg_idx_reg + {27'd0, seg_n_reg};
            c_src_reg <= c_src_reg + seglen_x[AW-1:0];
            c_off_reg <= (c_off_reg + seglen_x[AW-1:0]) & mask_reg;
            seg_n_reg <= 5'd0;
            seg0_reg <= 1'b1;
            seg_len_reg <= 33'd0;
            tw_reg <= 4'd0;
            if (seg_final_reg) done_reg <= 1'b1;
        end
        S_FADDR: begin
            // the beat a data error or the watchdog names (run-relative index -> address)
            if (e_where_reg == W_WORD) begin
                faddr_reg <= ent_word;
            end else begin
                faddr_reg <= (e_where_reg == W_SRC ? r_sb_reg : dbase_reg)
                    + (({r_off_reg[AW-1:LSB], {LSB{1'b0}}}
                        + ({{(AW-BW){1'b0}}, e_idx_reg} << LSB)) & mask_reg);
            end
            e_idx_reg <= e_idx_reg + r_base_reg;      // from the segment's first beat
            f_ph_reg <= 1'b0;
            f_j_reg <= 5'd0;
        end
        S_FIDX: begin
            // ... and its chunk: the segment's chunks have cs_beats beats each (a
            // subtraction, then its borrow acted on: two cycles per chunk, on a fault only)
            f_ph_reg <= !f_ph_reg;
            f_diff_reg <= {1'b0, e_idx_reg} - {1'b0, cs_beats_reg};
            if (e_where_reg == W_WORD) begin
                idx_reg <= seg_idx_reg + {27'd0, seg_n_reg};
            end else if (!multi_reg) begin
                idx_reg <= seg_idx_reg;
            end else if (f_ph_reg) begin
                if (f_diff_reg[BW]) begin
                    idx_reg <= seg_idx_reg + {27'd0, f_j_reg};
                end else begin
                    e_idx_reg <= f_diff_reg[BW-1:0];
                    f_j_reg <= f_j_reg + 5'd1;
                end
            end
        end
        S_STOP: begin
            if (stop_quiet) begin
                mv_clear_reg <= 1'b1;
                kill_reg <= 1'b0;
                if (sr_reg || cfg_soft_reset) begin
                    error_reg <= 1'b0;
                    fault_reg <= RM_FAULT_NONE;
                end else begin
                    error_reg <= 1'b1;
                end
            end
        end
        default: ;
    endcase

    // a bus error or the watchdog while a job runs
    if (mv_err_valid && running && !stopping) begin
        fault_reg <= mv_err_code;
        e_where_reg <= mv_err_where;
        e_idx_reg <= mv_err_idx;
        state_reg <= S_FADDR;
    end else if (stop_req && running && !stopping && state_reg != S_IDLE) begin
        fault_reg <= RM_FAULT_ABORTED;
        sr_reg <= cfg_soft_reset;
        state_reg <= S_STOP;
    end
    if (state_reg == S_STOP && cfg_soft_reset) sr_reg <= 1'b1;
    stop_old_reg <= state_reg == S_STOP;
    if (state_reg == S_IDLE || state_reg == S_STOP) abort_reg <= 1'b0;

    if (rst) begin
        state_reg <= S_IDLE;
        start_reg <= 1'b0;
        abort_reg <= 1'b0;
        done_reg <= 1'b0;
        error_reg <= 1'b0;
        fault_reg <= RM_FAULT_NONE;
        idx_reg <= 32'd0;
        crc_seen_reg <= 32'd0;
        bytes_reg <= 64'd0;
        faddr_reg <= {AW{1'b0}};
        run_verify_reg <= 1'b0;
        sr_reg <= 1'b0;
        mv_start_reg <= 1'b0;
        mv_word_reg <= 1'b0;
        mv_clear_reg <= 1'b0;
        w_cnt_reg <= {BW{1'b0}};
        mask_reg <= {AW{1'b1}};
        dbase_reg <= {AW{1'b0}};
        r_sb_reg <= {AW{1'b0}};
        r_off_reg <= {AW{1'b0}};
        r_beats_reg <= {{(BW-1){1'b0}}, 1'b1};
        r_base_reg <= {BW{1'b0}};
        r_fstrb_reg <= STRB_ALL;
        r_lstrb_reg <= STRB_ALL;
        r_last_reg <= 1'b0;
        multi_reg <= 1'b0;
        kmax_reg <= 5'd1;
        cs_beats_reg <= {{(BW-1){1'b0}}, 1'b1};
        cb1_reg <= 1'b1;
        wc_reg <= {BW{1'b0}};
        w_new_reg <= 1'b1;
        gate_reg <= 1'b0;
        kill_reg <= 1'b0;
        seg_ok_reg <= 1'b0;
        seg_n_reg <= 5'd0;
        seg0_reg <= 1'b1;
        seg_len_reg <= 33'd0;
        seg_idx_reg <= 32'd0;
        tw_reg <= 4'd0;
        vi_reg <= 5'd0;
        pf_reg <= 1'b0;
        stop_old_reg <= 1'b0;
    end
end

assign x_rd_data = rd_data_reg;
// The outputs the top level and the mirroring side use are flip-flops of their own, so
// no net of this controller's state crosses into the mirroring side. busy_reg and
// idle_reg are set together with start_reg and running (start_wr: start_reg is set next)
// and cleared a cycle after them: busy a cycle longer, never shorter. bus_reg (the top
// level's master-port select) follows `running` a cycle late; own_reg (this module's
// gate on the bus's ready and response inputs; own_copy_reg / own_verify_reg split by
// VERIFY_ONLY for the write side) is set from the job's third cycle (S_WALK) on: the
// first request (a table word's read) leaves S_WALK2 three cycles after S_CHK1, and
// every transaction is answered before `running` falls, so both cover the job's traffic;
// mirroring may issue only after `busy` has fallen, a cycle after `running`.
// idle_reg is always !busy_reg, and own_reg is own_copy_reg || own_verify_reg: kept as
// flip-flops of their own on purpose, each placed by its own consumers (an inverter or OR
// behind one flip-flop would route that flip-flop's net to all of them again)
always @(posedge clk) begin
    busy_reg <= running || start_reg || start_wr;
    idle_reg <= !(running || start_reg || start_wr);
    bus_reg <= running;
    own_reg <= running && state_reg != S_CHK1;
    own_copy_reg <= running && state_reg != S_CHK1 && !run_verify_reg;
    own_verify_reg <= running && state_reg != S_CHK1 && run_verify_reg;
    if (rst) begin
        own_copy_reg <= 1'b0;
        own_verify_reg <= 1'b0;
        busy_reg <= 1'b0;
        idle_reg <= 1'b1;
        bus_reg <= 1'b0;
        own_reg <= 1'b0;
    end
end
assign busy = busy_reg;
assign bus = bus_reg;
assign idle = idle_reg;

endmodule

`resetall
