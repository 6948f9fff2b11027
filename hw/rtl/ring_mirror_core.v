// Ring-mirror engine: the AXI4 master that copies committed bytes of a pyshm ring into its
// replica and publishes the mirrored position (docs/design.md, "The ring-mirror IP").
//
// One copy round:
//   1. read the ring's tail word; if the producer lapped the engine, skip to the oldest
//      intact partition (or, after two rounds in a row that kept nothing, to the newest
//      partition only: a producer that writes a lap faster than one is copied tears
//      every round that starts at the oldest one; see docs/hw.md, "Catch-up");
//   2. raise the replica's tail-intent word (REPLICA_TAIL_ADDR + 0x80) to the round's end
//      and wait for its write response before any data write, so that a reader of the live
//      replica detects with the seqlock check that bytes it copied were being replaced
//      (the producer's protocol, applied to the replica, as the CPU engine does);
//   3. copy positions [start, tail) in INCR read bursts split at 4 KiB (the ring's wrap is
//      a 4 KiB boundary too, since the capacity is a power of two >= 4 KiB and the data
//      bases are 4 KiB aligned); read data streams through a FIFO into write bursts;
//   4. once every read beat has arrived, read tail intent i2: if it is beyond
//      start + capacity the producer may have overwritten bytes while they were read.
//      Bytes at positions >= i2 - capacity were not touched before the reads finished, so
//      the records from the first partition start b at or after it are intact: when
//      b < tail the round keeps [b, tail) (the CPU engine's rule, so a producer that laps
//      every copy still lets the engine progress); only when b >= tail is nothing kept
//      and the next round restarts at b. Either way an overrun and b - start lost bytes
//      are counted;
//   5. once every write is acknowledged, after a kept partial round raise the replica's
//      tail intent to b + capacity - partition + 1 (replica readers then start at b,
//      never on the torn bytes below it), write the tail into the replica's tail word and
//      then into the ring's mirrored word.
// Read bursts are issued only when the FIFO has room for all their beats (credits), so
// rready is constantly high and several bursts can be in flight to hide memory latency.
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

    // configuration (from the register file)
    input  wire                    cfg_enable,
    input  wire                    cfg_sync,          // a one-shot round is requested
    input  wire                    cfg_soft_reset,    // reset requested (acted on when quiet)
    input  wire [63:0]             cfg_ring_base,
    input  wire [63:0]             cfg_capacity,
    input  wire [63:0]             cfg_partition,
    input  wire [63:0]             cfg_replica_base,
    input  wire [63:0]             cfg_tail_addr,
    input  wire [63:0]             cfg_intent_addr,
    input  wire [63:0]             cfg_mirrored_addr,
    input  wire [63:0]             cfg_replica_tail_addr,
    input  wire [31:0]             cfg_poll_interval,
    input  wire [31:0]             cfg_irq_progress,
    input  wire                    cfg_mirrored_load, // pulse: start from cfg_mirrored_value
    input  wire [63:0]             cfg_mirrored_value,

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
localparam [2:0] FULL_SIZE = LSB[2:0];
localparam CMD_DEPTH = 16;                          // write bursts in flight at most
localparam CNT_W = 16;                             // beat counters
localparam BURST_W = 9;                             // holds 1..256

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

localparam [3:0]
    S_IDLE = 4'd0,
    S_TAIL_R = 4'd1,
    S_PLAN = 4'd2,
    S_COPY = 4'd3,
    S_INTENT_R = 4'd4,
    S_CHECK = 4'd5,
    S_WDRAIN = 4'd6,
    S_PUB_REPLICA = 4'd7,
    S_PUB_RING = 4'd8,
    S_DRAIN = 4'd9,
    S_FAULT = 4'd10,
    S_RINT_R = 4'd11,
    S_RINT_W = 4'd12,
    S_PUB_RINT = 4'd13;

// the replica's tail-intent word sits 0x80 after its tail word (pyshm layout version 1)
localparam [63:0] RINT_FROM_TAIL = 64'h80;

localparam [1:0] RESP_DECERR = 2'b11;
localparam [BYTES-1:0] STRB_ALL = {BYTES{1'b1}};
localparam [63:0] BEAT_MASK = ~((64'd1 << LSB) - 64'd1);   // clears the byte-in-beat bits

// ---------------------------------------------------------------- engine state
reg [3:0] state_reg, state_next;
reg [7:0] fault_reg, fault_next;
reg [63:0] start_reg, start_next;        // first position of the next round
reg [63:0] mirrored_reg, mirrored_next;  // last published position
reg [63:0] tail_reg, tail_next;
reg [63:0] intent_reg, intent_next;
reg [63:0] copy_start_reg, copy_start_next;
reg [63:0] copy_ptr_reg, copy_ptr_next;  // next position to request
reg torn_reg, torn_next;
reg gap_reg, gap_next;                   // resynchronised since the last publish
reg [1:0] torn_run_reg, torn_run_next;   // rounds in a row that kept nothing (saturates)
reg [63:0] rint_reg, rint_next;          // what the replica's tail intent holds
reg rint_known_reg, rint_known_next;     // rint_reg was read or written since (re)start
reg sync_round_reg, sync_round_next;    // this round began with a sync pending
reg [31:0] poll_cnt_reg, poll_cnt_next;
reg [31:0] progress_reg, progress_next;
reg [63:0] bytes_reg, bytes_next;
reg [63:0] bursts_reg, bursts_next;
reg [63:0] overruns_reg, overruns_next;
reg [63:0] lost_reg, lost_next;          // positions skipped by overruns, never published
reg [63:0] busy_cycles_reg, busy_cycles_next;

reg ev_sync_done_reg, ev_sync_done_next;
reg ev_soft_reset_done_reg, ev_soft_reset_done_next;
reg ev_fault_reg, ev_fault_next;
reg ev_progress_reg, ev_progress_next;
reg ev_overrun_reg, ev_overrun_next;

// outstanding work
reg [CNT_W-1:0] rd_beats_reg, rd_beats_next;        // requested, not yet received
reg [CNT_W-1:0] fifo_used_reg, fifo_used_next;      // FIFO beats reserved or held
reg [7:0] rd_bursts_reg, rd_bursts_next;         // read data bursts in flight
reg [5:0] wr_bursts_reg, wr_bursts_next;         // data write bursts not acknowledged

// AR channel
reg ar_valid_reg, ar_valid_next;
reg [ADDR_WIDTH-1:0] ar_addr_reg, ar_addr_next;
reg [7:0] ar_len_reg, ar_len_next;
reg [2:0] ar_size_reg, ar_size_next;

// publish request to the write side
reg pub_req_reg, pub_req_next;
reg [ADDR_WIDTH-1:0] pub_addr_reg, pub_addr_next;
reg [63:0] pub_data_reg, pub_data_next;

// ---------------------------------------------------------------- configuration checks
wire [63:0] cap_mask = cfg_capacity - 64'd1;
wire [63:0] part_mask = cfg_partition - 64'd1;
wire [63:0] rint_addr = cfg_replica_tail_addr + RINT_FROM_TAIL;
wire rint_addr_wraps = rint_addr < cfg_replica_tail_addr;
wire addr_hi_bad;
generate
    if (ADDR_WIDTH < 64) begin : g_addr_check
        assign addr_hi_bad =
            |cfg_ring_base[63:ADDR_WIDTH] || |cfg_replica_base[63:ADDR_WIDTH]
            || |cap_mask[63:ADDR_WIDTH]
            || |cfg_tail_addr[63:ADDR_WIDTH] || |cfg_intent_addr[63:ADDR_WIDTH]
            || |cfg_mirrored_addr[63:ADDR_WIDTH] || |cfg_replica_tail_addr[63:ADDR_WIDTH]
            || |rint_addr[63:ADDR_WIDTH] || rint_addr_wraps;
    end else begin : g_addr_full
        assign addr_hi_bad = rint_addr_wraps;
    end
endgenerate

reg [7:0] cfg_fault;
always @* begin
    cfg_fault = RM_FAULT_NONE;
    if (cfg_capacity < 64'd4096 || (cfg_capacity & cap_mask) != 64'd0) begin
        cfg_fault = RM_FAULT_BAD_CAPACITY;
    end else if (cfg_partition < 64'd64 || cfg_partition > cfg_capacity
            || (cfg_partition & part_mask) != 64'd0) begin
        cfg_fault = RM_FAULT_BAD_PARTITION;
    end else if (cfg_ring_base[11:0] != 12'd0 || cfg_replica_base[11:0] != 12'd0
            || cfg_tail_addr[2:0] != 3'd0 || cfg_intent_addr[2:0] != 3'd0
            || cfg_mirrored_addr[2:0] != 3'd0 || cfg_replica_tail_addr[2:0] != 3'd0) begin
        cfg_fault = RM_FAULT_BAD_ALIGNMENT;
    end else if (addr_hi_bad) begin
        cfg_fault = RM_FAULT_ADDR_RANGE;
    end
end

// first partition start at or after x - capacity (the oldest position still intact)
function [63:0] oldest_boundary(input [63:0] x, input [63:0] cap, input [63:0] pmask);
    begin
        if (x <= cap) begin
            oldest_boundary = 64'd0;
        end else begin
            oldest_boundary = ((x - cap) + pmask) & ~pmask;
        end
    end
endfunction

// Replica tail intent for the round [copy_start, tail): the round's end and, after a
// resynchronisation, at least copy_start + capacity - partition + 1, whose oldest intact
// partition is copy_start itself: a replica reader then never starts below copy_start,
// where the replica still holds bytes of an older lap or of a discarded (torn) round.
wire [63:0] rint_gap = copy_start_reg + cfg_capacity - cfg_partition + 64'd1;
wire [63:0] rint_want = (gap_reg && rint_gap > tail_reg) ? rint_gap : tail_reg;
// first partition start at or after the intent read after the copy, minus the capacity
wire [63:0] intent_oldest = oldest_boundary(intent_reg, cfg_capacity, part_mask);
// start of the partition holding the newest committed byte
wire [63:0] newest_part = (tail_reg - 64'd1) & ~part_mask;

// ---------------------------------------------------------------- next burst
wire [63:0] ptr_aligned = copy_ptr_reg & BEAT_MASK;
/* verilator lint_off UNUSEDSIGNAL */
wire [63:0] off_aligned = ptr_aligned & cap_mask;   // offsets fit ADDR_WIDTH (checked)
wire [23:0] to_4k_bytes = 24'd4096 - {12'd0, off_aligned[11:0]};
wire [63:0] rem_bytes = tail_reg - ptr_aligned;
wire [63:0] rem_beats = (rem_bytes + ~BEAT_MASK) >> LSB;
reg [BURST_W-1:0] burst_beats;
always @* begin
    burst_beats = MAX_BURST_LEN[BURST_W-1:0];
    if ((to_4k_bytes >> LSB) < {15'd0, burst_beats}) begin
        burst_beats = to_4k_bytes[BURST_W+LSB-1:LSB];
    end
    if (rem_beats < {55'd0, burst_beats}) begin
        burst_beats = rem_beats[BURST_W-1:0];
    end
end
wire [CNT_W-1:0] burst_beats_c = {{(CNT_W-BURST_W){1'b0}}, burst_beats};
wire [63:0] burst_end = ptr_aligned + ({55'd0, burst_beats} << LSB);
wire [63:0] burst_over = burst_end - tail_reg;    // bytes past the tail in the last beat
/* verilator lint_on UNUSEDSIGNAL */
wire [BYTES-1:0] burst_first_strb = STRB_ALL << copy_ptr_reg[LSB-1:0];
wire [BYTES-1:0] burst_last_strb = burst_end > tail_reg ? STRB_ALL >> burst_over[LSB-1:0]
                                                         : STRB_ALL;

// ---------------------------------------------------------------- write side signals
wire cmd_full_aw, cmd_full_w;
// a sync request counts only until the round it started reports done
wire sync_req = cfg_sync && !ev_sync_done_reg;
wire r_fire = m_axi_rvalid;                     // rready is constantly 1
wire r_ctrl = state_reg == S_TAIL_R || state_reg == S_INTENT_R || state_reg == S_RINT_R;
wire r_data_fire = r_fire && !r_ctrl;
wire b_fire = m_axi_bvalid;                     // bready is constantly 1
wire w_data_fire;                               // a data beat left the FIFO
reg pub_mode_reg, pub_mode_next;         // the write channels carry a publish
wire b_data_fire = b_fire && !pub_mode_reg;
wire pub_done = b_fire && pub_mode_reg;

wire can_issue = !ar_valid_reg
    && rd_bursts_reg < MAX_OUTSTANDING[7:0]
    && wr_bursts_reg < CMD_DEPTH[5:0]
    && !cmd_full_aw && !cmd_full_w
    && (burst_beats_c + fifo_used_reg) <= FIFO_DEPTH[CNT_W-1:0];
reg issue;

/* verilator lint_off UNUSEDSIGNAL */
wire [DATA_WIDTH-1:0] r_shifted = m_axi_rdata >> {ar_addr_reg[LSB-1:0], 3'b000};
/* verilator lint_on UNUSEDSIGNAL */
wire [63:0] r_word = r_shifted[63:0];

// ---------------------------------------------------------------- engine FSM
always @* begin
    state_next = state_reg;
    fault_next = fault_reg;
    start_next = start_reg;
    mirrored_next = mirrored_reg;
    tail_next = tail_reg;
    intent_next = intent_reg;
    copy_start_next = copy_start_reg;
    copy_ptr_next = copy_ptr_reg;
    torn_next = torn_reg;
    gap_next = gap_reg;
    torn_run_next = torn_run_reg;
    rint_next = rint_reg;
    rint_known_next = rint_known_reg;
    sync_round_next = sync_round_reg;
    poll_cnt_next = poll_cnt_reg;
    progress_next = progress_reg;
    bytes_next = bytes_reg;
    bursts_next = bursts_reg;
    overruns_next = overruns_reg;
    lost_next = lost_reg;
    busy_cycles_next = busy_cycles_reg;
    ev_sync_done_next = 1'b0;
    ev_soft_reset_done_next = 1'b0;
    ev_fault_next = 1'b0;
    ev_progress_next = 1'b0;
    ev_overrun_next = 1'b0;
    ar_valid_next = ar_valid_reg && !m_axi_arready;
    ar_addr_next = ar_addr_reg;
    ar_len_next = ar_len_reg;
    ar_size_next = ar_size_reg;
    pub_req_next = 1'b0;
    pub_addr_next = pub_addr_reg;
    pub_data_next = pub_data_reg;
    issue = 1'b0;

    // the first error response wins; everything after it only drains
    if (fault_reg == RM_FAULT_NONE) begin
        if (b_fire && m_axi_bresp[1]) begin
            fault_next = m_axi_bresp == RESP_DECERR ? RM_FAULT_WRITE_DECERR
                                                    : RM_FAULT_WRITE_SLVERR;
        end
        if (r_fire && m_axi_rresp[1]) begin
            fault_next = m_axi_rresp == RESP_DECERR ? RM_FAULT_READ_DECERR
                                                    : RM_FAULT_READ_SLVERR;
        end
    end

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
                gap_next = 1'b0;
                torn_run_next = 2'd0;
                rint_known_next = 1'b0;
            end else if (cfg_enable || sync_req) begin
                if (poll_cnt_reg != 32'd0 && !sync_req) begin
                    poll_cnt_next = poll_cnt_reg - 32'd1;
                end else if (cfg_fault != RM_FAULT_NONE) begin
                    fault_next = cfg_fault;
                    state_next = S_DRAIN;
                end else begin
                    ar_valid_next = 1'b1;
                    ar_addr_next = cfg_tail_addr[ADDR_WIDTH-1:0];
                    ar_len_next = 8'd0;
                    ar_size_next = 3'd3;
                    sync_round_next = sync_req;
                    state_next = S_TAIL_R;
                end
            end
        end
        S_TAIL_R: begin
            if (r_fire) begin
                tail_next = r_word;
                state_next = m_axi_rresp[1] ? S_DRAIN : S_PLAN;
            end
        end
        S_PLAN: begin
            if (tail_reg[2:0] != 3'd0) begin
                fault_next = RM_FAULT_BAD_TAIL;
                state_next = S_DRAIN;
            end else if (tail_reg <= start_reg) begin
                // nothing new: a one-shot sync is complete, continuous mode waits a while
                ev_sync_done_next = sync_round_reg;
                poll_cnt_next = cfg_poll_interval;
                state_next = S_IDLE;
            end else begin
                copy_start_next = start_reg;
                copy_ptr_next = start_reg;
                if (tail_reg - start_reg > cfg_capacity) begin
                    // lapped before the copy began: skip to the oldest intact record
                    copy_start_next = oldest_boundary(tail_reg, cfg_capacity, part_mask);
                    copy_ptr_next = copy_start_next;
                    overruns_next = overruns_reg + 64'd1;
                    lost_next = lost_reg + (copy_start_next - start_reg);
                    ev_overrun_next = 1'b1;
                    gap_next = 1'b1;
                end
                if (torn_run_reg == 2'd2 && newest_part > copy_start_next) begin
                    // two rounds in a row kept nothing: the producer writes a lap faster
                    // than one is copied, so a round that starts at the oldest partition
                    // is torn before it ends. Copy only the newest partition, the one
                    // round short enough to finish before its bytes are reused.
                    lost_next = lost_reg + (newest_part - start_reg);
                    copy_start_next = newest_part;
                    copy_ptr_next = newest_part;
                    if (!(tail_reg - start_reg > cfg_capacity)) begin
                        overruns_next = overruns_reg + 64'd1;
                        ev_overrun_next = 1'b1;
                    end
                    gap_next = 1'b1;
                end
                if (rint_known_reg) begin
                    state_next = S_RINT_W;
                end else begin
                    // first round since (re)start: "only if it grows" needs the current value
                    ar_valid_next = 1'b1;
                    ar_addr_next = rint_addr[ADDR_WIDTH-1:0];
                    ar_len_next = 8'd0;
                    ar_size_next = 3'd3;
                    state_next = S_RINT_R;
                end
            end
        end
        S_RINT_R: begin
            if (r_fire) begin
                rint_next = r_word;
                rint_known_next = !m_axi_rresp[1];
                state_next = m_axi_rresp[1] ? S_DRAIN : S_RINT_W;
            end
        end
        S_RINT_W: begin
            // the write side sends this before any data burst of the round and holds the
            // data back until its response; reads are issued meanwhile
            if (rint_want > rint_reg) begin
                pub_req_next = 1'b1;
                pub_addr_next = rint_addr[ADDR_WIDTH-1:0];
                pub_data_next = rint_want;
                rint_next = rint_want;
            end
            state_next = S_COPY;
        end
        S_COPY: begin
            if (fault_reg != RM_FAULT_NONE) begin
                state_next = S_DRAIN;
            end else if (copy_ptr_reg < tail_reg) begin
                if (can_issue) begin
                    issue = 1'b1;
                    ar_valid_next = 1'b1;
                    ar_addr_next = cfg_ring_base[ADDR_WIDTH-1:0] + off_aligned[ADDR_WIDTH-1:0];
                    ar_len_next = burst_beats[7:0] - 8'd1;
                    ar_size_next = FULL_SIZE;
                    copy_ptr_next = burst_end;
                    bursts_next = bursts_reg + 64'd1;
                end
            end else if (rd_beats_reg == 0 && !ar_valid_reg) begin
                // every data beat has arrived: now tail intent proves the copy intact
                ar_valid_next = 1'b1;
                ar_addr_next = cfg_intent_addr[ADDR_WIDTH-1:0];
                ar_len_next = 8'd0;
                ar_size_next = 3'd3;
                state_next = S_INTENT_R;
            end
        end
        S_INTENT_R: begin
            if (r_fire) begin
                intent_next = r_word;
                state_next = m_axi_rresp[1] ? S_DRAIN : S_CHECK;
            end
        end
        S_CHECK: begin
            torn_next = 1'b0;
            if (intent_reg < tail_reg) begin
                fault_next = RM_FAULT_BAD_INTENT;
                state_next = S_DRAIN;
            end else begin
                if (intent_reg - copy_start_reg > cfg_capacity) begin
                    // lapped during the copy: bytes below intent - capacity may be torn,
                    // those from the next partition start on were read intact
                    overruns_next = overruns_reg + 64'd1;
                    ev_overrun_next = 1'b1;
                    gap_next = 1'b1;
                    if (intent_oldest < tail_reg) begin
                        // keep [oldest, tail): rint_gap now hides everything below it
                        copy_start_next = intent_oldest;
                        lost_next = lost_reg + (intent_oldest - copy_start_reg);
                    end else begin
                        // nothing intact: publish nothing, restart at the oldest boundary
                        torn_next = 1'b1;
                        start_next = intent_oldest;
                        if (torn_run_reg != 2'd2) torn_run_next = torn_run_reg + 2'd1;
                        lost_next = lost_reg + (intent_oldest - copy_start_reg);
                    end
                end
                state_next = S_WDRAIN;
            end
        end
        S_WDRAIN: begin
            if (fault_reg != RM_FAULT_NONE) begin
                state_next = S_DRAIN;
            end else if (wr_bursts_reg == 6'd0 && !pub_mode_reg && !pub_req_reg) begin
                if (torn_reg) begin
                    poll_cnt_next = 32'd0;
                    state_next = S_IDLE;
                end else if (gap_reg && rint_gap > rint_reg) begin
                    // a kept partial round: readers of the replica must start at its
                    // first kept partition before the replica's tail claims the round
                    pub_req_next = 1'b1;
                    pub_addr_next = rint_addr[ADDR_WIDTH-1:0];
                    pub_data_next = rint_gap;
                    rint_next = rint_gap;
                    state_next = S_PUB_RINT;
                end else begin
                    pub_req_next = 1'b1;
                    pub_addr_next = cfg_replica_tail_addr[ADDR_WIDTH-1:0];
                    pub_data_next = tail_reg;
                    state_next = S_PUB_REPLICA;
                end
            end
        end
        S_PUB_RINT: begin
            if (pub_done) begin
                if (m_axi_bresp[1]) begin
                    state_next = S_DRAIN;
                end else begin
                    pub_req_next = 1'b1;
                    pub_addr_next = cfg_replica_tail_addr[ADDR_WIDTH-1:0];
                    pub_data_next = tail_reg;
                    state_next = S_PUB_REPLICA;
                end
            end
        end
        S_PUB_REPLICA: begin
            if (pub_done) begin
                if (m_axi_bresp[1]) begin
                    state_next = S_DRAIN;
                end else begin
                    pub_req_next = 1'b1;
                    pub_addr_next = cfg_mirrored_addr[ADDR_WIDTH-1:0];
                    pub_data_next = tail_reg;
                    state_next = S_PUB_RING;
                end
            end
        end
        S_PUB_RING: begin
            if (pub_done) begin
                if (m_axi_bresp[1]) begin
                    state_next = S_DRAIN;
                end else begin
                    mirrored_next = tail_reg;
                    start_next = tail_reg;
                    gap_next = 1'b0;
                    torn_run_next = 2'd0;
                    bytes_next = bytes_reg + (tail_reg - copy_start_reg);
                    // progress counts at most 4 GiB per round, far above any threshold
                    progress_next = progress_reg + (tail_reg[31:0] - copy_start_reg[31:0]);
                    if (cfg_irq_progress != 32'd0 && progress_next >= cfg_irq_progress) begin
                        progress_next = 32'd0;
                        ev_progress_next = 1'b1;
                    end
                    ev_sync_done_next = sync_round_reg;
                    poll_cnt_next = 32'd0;
                    state_next = S_IDLE;
                end
            end
        end
        S_DRAIN: begin
            // stop issuing; wait for every outstanding beat and response, then halt
            if (rd_beats_reg == 0 && wr_bursts_reg == 6'd0 && !ar_valid_reg
                    && !pub_mode_reg && !pub_req_reg) begin
                ev_fault_next = 1'b1;
                state_next = S_FAULT;
            end
        end
        S_FAULT: begin
            if (cfg_soft_reset) begin
                fault_next = RM_FAULT_NONE;
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
                state_next = S_IDLE;
            end
        end
        default: state_next = S_FAULT;
    endcase
end

// outstanding-work counters
always @* begin
    rd_beats_next = rd_beats_reg;
    fifo_used_next = fifo_used_reg;
    rd_bursts_next = rd_bursts_reg;
    wr_bursts_next = wr_bursts_reg;
    if (issue) begin
        rd_beats_next = rd_beats_next + burst_beats_c;
        fifo_used_next = fifo_used_next + burst_beats_c;
        rd_bursts_next = rd_bursts_next + 8'd1;
        wr_bursts_next = wr_bursts_next + 6'd1;
    end
    if (r_data_fire) begin
        rd_beats_next = rd_beats_next - 1'b1;
        if (m_axi_rlast) begin
            rd_bursts_next = rd_bursts_next - 8'd1;
        end
    end
    if (w_data_fire) begin
        fifo_used_next = fifo_used_next - 1'b1;
    end
    if (b_data_fire) begin
        wr_bursts_next = wr_bursts_next - 6'd1;
    end
end

always @(posedge clk) begin
    state_reg <= state_next;
    fault_reg <= fault_next;
    start_reg <= start_next;
    mirrored_reg <= mirrored_next;
    tail_reg <= tail_next;
    intent_reg <= intent_next;
    copy_start_reg <= copy_start_next;
    copy_ptr_reg <= copy_ptr_next;
    torn_reg <= torn_next;
    gap_reg <= gap_next;
    torn_run_reg <= torn_run_next;
    rint_reg <= rint_next;
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
    rd_beats_reg <= rd_beats_next;
    fifo_used_reg <= fifo_used_next;
    rd_bursts_reg <= rd_bursts_next;
    wr_bursts_reg <= wr_bursts_next;
    ar_valid_reg <= ar_valid_next;
    ar_addr_reg <= ar_addr_next;
    ar_len_reg <= ar_len_next;
    ar_size_reg <= ar_size_next;
    pub_req_reg <= pub_req_next;
    pub_addr_reg <= pub_addr_next;
    pub_data_reg <= pub_data_next;

    if (rst) begin
        state_reg <= S_IDLE;
        fault_reg <= RM_FAULT_NONE;
        start_reg <= 64'd0;
        mirrored_reg <= 64'd0;
        tail_reg <= 64'd0;
        intent_reg <= 64'd0;
        torn_reg <= 1'b0;
        gap_reg <= 1'b0;
        torn_run_reg <= 2'd0;
        rint_reg <= 64'd0;
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
        rd_beats_reg <= 0;
        fifo_used_reg <= 0;
        rd_bursts_reg <= 8'd0;
        wr_bursts_reg <= 6'd0;
        ar_valid_reg <= 1'b0;
        ar_addr_reg <= 0;
        ar_len_reg <= 8'd0;
        ar_size_reg <= 3'd0;
        pub_req_reg <= 1'b0;
        pub_addr_reg <= 0;
        pub_data_reg <= 64'd0;
        copy_start_reg <= 64'd0;
        copy_ptr_reg <= 64'd0;
    end
end

// ---------------------------------------------------------------- data path: R -> FIFO -> W
wire [DATA_WIDTH-1:0] dfifo_data;
wire dfifo_valid;
/* verilator lint_off UNUSEDSIGNAL */
wire dfifo_full;   // cannot happen: reads are issued against FIFO credits
/* verilator lint_on UNUSEDSIGNAL */

rm_fifo #(.WIDTH(DATA_WIDTH), .DEPTH(FIFO_DEPTH)) data_fifo (
    .clk(clk), .rst(rst),
    .in_data(m_axi_rdata), .in_valid(r_data_fire), .full(dfifo_full),
    .out_data(dfifo_data), .out_valid(dfifo_valid), .out_ready(w_data_fire)
);

// per-burst commands for the AW channel and for the W beat sequencer
wire [ADDR_WIDTH-1:0] issue_dst = cfg_replica_base[ADDR_WIDTH-1:0] + off_aligned[ADDR_WIDTH-1:0];
wire [ADDR_WIDTH+7:0] awcmd_out;
wire awcmd_valid;
reg awcmd_pop;
rm_fifo #(.WIDTH(ADDR_WIDTH + 8), .DEPTH(CMD_DEPTH)) aw_cmd_fifo (
    .clk(clk), .rst(rst),
    .in_data({issue_dst, burst_beats[7:0] - 8'd1}), .in_valid(issue), .full(cmd_full_aw),
    .out_data(awcmd_out), .out_valid(awcmd_valid), .out_ready(awcmd_pop)
);

wire [2*BYTES+7:0] wcmd_out;
wire wcmd_valid;
reg wcmd_pop;
rm_fifo #(.WIDTH(2 * BYTES + 8), .DEPTH(CMD_DEPTH)) w_cmd_fifo (
    .clk(clk), .rst(rst),
    .in_data({burst_first_strb, burst_last_strb, burst_beats[7:0] - 8'd1}),
    .in_valid(issue), .full(cmd_full_w),
    .out_data(wcmd_out), .out_valid(wcmd_valid), .out_ready(wcmd_pop)
);

// AW channel (data bursts and the three single-word writes share it; never at the same
// time: while a word write is pending, pub_mode holds the data bursts back)
reg aw_valid_reg, aw_valid_next;
reg [ADDR_WIDTH-1:0] aw_addr_reg, aw_addr_next;
reg [7:0] aw_len_reg, aw_len_next;
reg [2:0] aw_size_reg, aw_size_next;

// W beat sequencer
reg w_active_reg, w_active_next;
reg [7:0] w_left_reg, w_left_next;        // beats after the current one
reg w_first_reg, w_first_next;
reg [BYTES-1:0] w_first_strb_reg, w_first_strb_next;
reg [BYTES-1:0] w_last_strb_reg, w_last_strb_next;
reg pub_w_valid_reg, pub_w_valid_next;
reg [DATA_WIDTH-1:0] pub_w_data_reg, pub_w_data_next;
reg [BYTES-1:0] pub_w_strb_reg, pub_w_strb_next;

wire w_last = w_left_reg == 8'd0;
wire w_data_valid = w_active_reg && dfifo_valid;
assign w_data_fire = w_data_valid && m_axi_wready && !pub_mode_reg;
wire [BYTES-1:0] w_strb_data = (w_first_reg ? w_first_strb_reg : STRB_ALL)
                             & (w_last ? w_last_strb_reg : STRB_ALL);
wire [BYTES-1:0] strb8 = STRB_ALL >> (BYTES - 8);

always @* begin
    aw_valid_next = aw_valid_reg && !m_axi_awready;
    aw_addr_next = aw_addr_reg;
    aw_len_next = aw_len_reg;
    aw_size_next = aw_size_reg;
    awcmd_pop = 1'b0;
    wcmd_pop = 1'b0;
    w_active_next = w_active_reg;
    w_left_next = w_left_reg;
    w_first_next = w_first_reg;
    w_first_strb_next = w_first_strb_reg;
    w_last_strb_next = w_last_strb_reg;
    pub_mode_next = pub_mode_reg;
    pub_w_valid_next = pub_w_valid_reg && !m_axi_wready;
    pub_w_data_next = pub_w_data_reg;
    pub_w_strb_next = pub_w_strb_reg;

    if (pub_req_reg) begin
        // the FSM asks only when no data write is outstanding (before a round's first
        // data burst, or after the last one's response)
        pub_mode_next = 1'b1;
        aw_valid_next = 1'b1;
        aw_addr_next = pub_addr_reg;
        aw_len_next = 8'd0;
        aw_size_next = 3'd3;
        pub_w_valid_next = 1'b1;
        pub_w_data_next = {(DATA_WIDTH/64){pub_data_reg}};
        pub_w_strb_next = strb8 << pub_addr_reg[LSB-1:0];
    end else if (pub_done) begin
        pub_mode_next = 1'b0;
    end else if (!pub_mode_reg && (!aw_valid_reg || m_axi_awready) && awcmd_valid) begin
        awcmd_pop = 1'b1;
        aw_valid_next = 1'b1;
        aw_addr_next = awcmd_out[ADDR_WIDTH+7:8];
        aw_len_next = awcmd_out[7:0];
        aw_size_next = FULL_SIZE;
    end

    if (w_data_fire) begin
        w_first_next = 1'b0;
        w_left_next = w_left_reg - 8'd1;
        if (w_last) begin
            w_active_next = 1'b0;
        end
    end
    // load the next burst in the same cycle the last beat leaves: no bubble between bursts
    if ((!w_active_reg || (w_data_fire && w_last)) && wcmd_valid) begin
        wcmd_pop = 1'b1;
        w_active_next = 1'b1;
        w_first_next = 1'b1;
        w_left_next = wcmd_out[7:0];
        w_last_strb_next = wcmd_out[BYTES+7:8];
        w_first_strb_next = wcmd_out[2*BYTES+7:BYTES+8];
    end
end

always @(posedge clk) begin
    aw_valid_reg <= aw_valid_next;
    aw_addr_reg <= aw_addr_next;
    aw_len_reg <= aw_len_next;
    aw_size_reg <= aw_size_next;
    w_active_reg <= w_active_next;
    w_left_reg <= w_left_next;
    w_first_reg <= w_first_next;
    w_first_strb_reg <= w_first_strb_next;
    w_last_strb_reg <= w_last_strb_next;
    pub_mode_reg <= pub_mode_next;
    pub_w_valid_reg <= pub_w_valid_next;
    pub_w_data_reg <= pub_w_data_next;
    pub_w_strb_reg <= pub_w_strb_next;
    if (rst) begin
        aw_valid_reg <= 1'b0;
        aw_addr_reg <= 0;
        aw_len_reg <= 8'd0;
        aw_size_reg <= 3'd0;
        w_active_reg <= 1'b0;
        w_left_reg <= 8'd0;
        w_first_reg <= 1'b0;
        w_first_strb_reg <= 0;
        w_last_strb_reg <= 0;
        pub_w_data_reg <= 0;
        pub_w_strb_reg <= 0;
        pub_mode_reg <= 1'b0;
        pub_w_valid_reg <= 1'b0;
    end
end

// ---------------------------------------------------------------- outputs
assign m_axi_awid = {ID_WIDTH{1'b0}};
assign m_axi_awaddr = aw_addr_reg;
assign m_axi_awlen = aw_len_reg;
assign m_axi_awsize = aw_size_reg;
assign m_axi_awburst = 2'b01;
assign m_axi_awlock = 1'b0;
assign m_axi_awcache = AXI_CACHE;
assign m_axi_awprot = AXI_PROT;
assign m_axi_awvalid = aw_valid_reg;
assign m_axi_wdata = pub_mode_reg ? pub_w_data_reg : dfifo_data;
// after a fault the remaining beats of bursts already announced go out with no byte
// enabled, so nothing read after the error lands in the replica
assign m_axi_wstrb = pub_mode_reg ? pub_w_strb_reg
                   : (fault_reg != RM_FAULT_NONE ? {BYTES{1'b0}} : w_strb_data);
assign m_axi_wlast = pub_mode_reg ? 1'b1 : w_last;
assign m_axi_wvalid = pub_mode_reg ? pub_w_valid_reg : w_data_valid;
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
assign ev_sync_done = ev_sync_done_reg;
assign ev_soft_reset_done = ev_soft_reset_done_reg;
assign ev_fault = ev_fault_reg;
assign ev_progress = ev_progress_reg;
assign ev_overrun = ev_overrun_reg;

endmodule

`resetall
