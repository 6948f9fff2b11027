// Replica CRC table keeper of the ring-mirror IP (docs/design.md, "Replica CRC table"):
// checksums the data beats rm_mover loads into its W register, per block of the replica's
// data area, and hands rm_mover one entry write per block piece a run wrote.
//
// Geometry follows the layout (pyshm layout 1), nothing to program but the enable: the
// table lies right after the replica's data area (REPLICA_DATA_BASE + RING_CAPACITY), its
// entries from +0x40, table_tail at +0x18; a block is 64 KiB or one partition when
// partitions are smaller. Blocks are at least 64 bytes, so a block boundary is a beat
// boundary on every bus width the IP supports.
//
// A packet of rm_crc32c is the part of a block one round writes: it starts at a block
// start (from CRC 0) or at the round's first byte (continuing `partial`, the CRC of the
// block's bytes below the round start: the previous round's last result, or CRC_SEED
// written by software at a (re)start), and ends at a block end or at the round's last
// byte. Each result goes to entries[block mod entries], so the entry of the block holding
// the round's end gets the partial CRC the next round continues. A round whose bytes are
// torn writes entries the replica's tail intent already hides (docs/design.md).
//
// Results are in order: a result's block index is 0 when its packet starts at offset 0 of
// the area, the round start's block for the round's first packet, else the previous
// index + 1. `pending` counts packets from their last beat until their entry write is
// taken; beat_ready is low from READY_BELOW pending on (the mover checks it at a burst's
// first beat, and sizes the queue for what one burst can add), and `idle` (nothing
// pending) tells the mover that every entry of the data written so far has been handed
// over.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module rm_crc_table #(
    parameter DATA_WIDTH = 64,
    parameter ADDR_WIDTH = 40,
    parameter QUEUE_DEPTH = 8,          // entry writes queued at most, a power of two >= 2
    parameter READY_BELOW = 8           // beat_ready while fewer entries are pending
) (
    input  wire                    clk,
    input  wire                    rst,

    // configuration, stable while anything runs
    input  wire                    enable,
    input  wire [ADDR_WIDTH-1:0]   replica_base,   // the replica's data area
    input  wire [ADDR_WIDTH-1:0]   capacity,
    input  wire [ADDR_WIDTH-1:0]   cap_mask,       // capacity - 1
    input  wire [ADDR_WIDTH-1:0]   part_mask,      // partition - 1
    output wire [ADDR_WIDTH-1:0]   table_tail_addr,
    input  wire                    seed_load,      // partial := seed_value (engine stopped)
    input  wire [31:0]             seed_value,
    output wire [31:0]             partial,        // CRC of the latest block piece written
    output wire [31:0]             blocks,         // blocks whose last byte was checksummed

    // a run of the mover (its first and last beat strobes come with the beats)
    input  wire                    copy_start,
    input  wire [ADDR_WIDTH-1:0]   copy_off,       // area offset of the run's first beat
    input  wire                    copy_round_first, // the run starts the round
    input  wire                    copy_round_last,  // the run ends the round
    /* verilator lint_off UNUSEDSIGNAL */
    input  wire [DATA_WIDTH/8-1:0] copy_first_strb, // (only lane 0: does the round start
    /* verilator lint_on UNUSEDSIGNAL */             //  at its first beat's first byte?)

    // data beats as the mover loads them into W (what the replica receives)
    input  wire                    beat_valid,
    input  wire [DATA_WIDTH-1:0]   beat_data,
    input  wire [DATA_WIDTH/8-1:0] beat_strb,
    input  wire                    beat_run_first,
    input  wire                    beat_run_last,
    output wire                    beat_ready,     // the mover may load a beat this cycle

    // entry writes, one beat each
    output wire                    req_valid,
    output wire                    req_pending,    // req_valid before the abort/clear gate
    output wire [ADDR_WIDTH-1:0]   req_addr,       // the entry's, 4-byte aligned
    output wire [DATA_WIDTH/8-1:0] req_strb,
    output wire [DATA_WIDTH-1:0]   req_data,
    input  wire                    req_take,

    // (a C++ word: Verilator warns once the table's enable is a constant, as in rm_restore)
    /* verilator lint_off SYMRSVDWORD */
    input  wire                    abort,          // a fault: forget everything in flight
    /* verilator lint_on SYMRSVDWORD */
    input  wire                    clear,          // SOFT_RESET / an aborted run forgotten
                                                   // (after at least one cycle of abort)
    output wire                    idle
);

localparam BYTES = DATA_WIDTH / 8;
localparam LSB = $clog2(BYTES);
localparam AW = ADDR_WIDTH;
localparam QW = $clog2(QUEUE_DEPTH) + 1;
localparam [15:0] BEAT_LOW = {{(16-LSB){1'b0}}, {LSB{1'b1}}};
localparam [ADDR_WIDTH-1:0] BEAT_BYTES = {{(ADDR_WIDTH-LSB-1){1'b0}}, 1'b1, {LSB{1'b0}}};

initial begin
    if (DATA_WIDTH < 64 || DATA_WIDTH > 512 || (DATA_WIDTH & (DATA_WIDTH - 1)) != 0) begin
        $error("rm_crc_table: DATA_WIDTH (%0d) must be 64, 128, 256 or 512", DATA_WIDTH);
        $finish;
    end
    if (QUEUE_DEPTH < 2 || (QUEUE_DEPTH & (QUEUE_DEPTH - 1)) != 0) begin
        $error("rm_crc_table: QUEUE_DEPTH (%0d) must be a power of two >= 2", QUEUE_DEPTH);
        $finish;
    end
    if (READY_BELOW < 1 || READY_BELOW > QUEUE_DEPTH) begin
        $error("rm_crc_table: READY_BELOW (%0d) must be 1..QUEUE_DEPTH", READY_BELOW);
        $finish;
    end
end

// ---------------------------------------------------------------- geometry (registered)
reg [15:0] blk_mask_reg;                 // block bytes - 1 (block <= 64 KiB)
reg [4:0] shift_reg;                     // log2(block bytes)
reg [AW-1:0] entries_reg;                // bus address of entries[0]
reg [AW-1:0] ttail_addr_reg;
reg [AW-1:0] table_base_reg;
integer k;
always @(posedge clk) begin
    blk_mask_reg <= |(part_mask >> 16) ? 16'hFFFF : part_mask[15:0];
    shift_reg <= 5'd0;
    for (k = 0; k < 16; k = k + 1) begin
        if (blk_mask_reg[k]) shift_reg <= k[4:0] + 5'd1;
    end
    table_base_reg <= replica_base + capacity;
    entries_reg <= table_base_reg + 'h40;
    ttail_addr_reg <= table_base_reg + 'h18;
end

wire drop = abort || clear;

// ---------------------------------------------------------------- beats -> packets
reg [AW-1:0] off_reg, off_next;          // area offset of the next beat
reg round_first_reg, round_first_next;
reg round_last_reg, round_last_next;
reg lane0_reg, lane0_next;               // the round's first beat counts its lane 0
reg pkt_zero_reg, pkt_zero_next;         // the open packet starts at area offset 0
reg pkt_rfirst_reg, pkt_rfirst_next;     // the open packet starts the round
reg [AW-1:0] start_idx_reg;              // block of the round's first byte
reg [QW-1:0] pending_reg, pending_next;
// pending_reg < READY_BELOW and == 0, registered from the next value (the count moves by at
// most one a cycle: the register's comparisons with constants, selected by the move): the
// mover's W load decision and its quiet/done tests start at flip-flops, not at a compare
reg below_reg, none_reg;
reg [31:0] partial_reg, partial_next;
reg [31:0] blocks_reg, blocks_next;

wire [15:0] in_blk = off_reg[15:0] & blk_mask_reg;
wire blk_first = in_blk == 16'd0;
wire blk_last = in_blk == (blk_mask_reg & ~BEAT_LOW);
wire rfirst = beat_run_first && round_first_reg;
wire rlast = beat_run_last && round_last_reg;
wire s_first = blk_first || rfirst;
wire s_last = blk_last || rlast;
// the round continues the block below its first byte unless it starts at the block start
wire s_cont = rfirst && !(blk_first && lane0_reg);
wire at_zero = off_reg == {AW{1'b0}};
// (no drop gate: a drop resets the count, the CRC pipeline and the queue at its edge, and
// what else a beat moves, the offset and the open packet's flags, is set again by the next
// run's start and first beat; so the abort and clear nets end at resets, not in the count)
wire beat_in = beat_valid && enable;

wire u_valid;
wire [31:0] u_crc;
wire [2:0] u_user;                       // {ends a block, starts at offset 0, starts the round}

rm_crc32c #(.DATA_WIDTH(DATA_WIDTH), .USER_WIDTH(3)) crc (
    .clk(clk), .rst(rst || drop),
    .s_valid(beat_in), .s_data(beat_data), .s_strb(beat_strb),
    .s_first(s_first), .s_last(s_last), .s_seed(s_cont ? partial_reg : 32'd0),
    .s_user({blk_last, s_first ? at_zero : pkt_zero_reg, s_first ? rfirst : pkt_rfirst_reg}),
    .m_valid(u_valid), .m_crc(u_crc), .m_user(u_user)
);

// ---------------------------------------------------------------- results -> entry writes
reg r_valid_reg;                         // stage 1: the block index
reg [31:0] r_crc_reg;
reg [AW-1:0] r_idx_reg, r_idx_next;
reg q_valid_reg;                         // stage 2: the entry's address
reg [31:0] q_crc_reg;
reg [AW-1:0] q_addr_reg;

wire take = req_take && req_valid;
wire q_push = q_valid_reg;

always @* begin
    off_next = off_reg;
    round_first_next = round_first_reg;
    round_last_next = round_last_reg;
    lane0_next = lane0_reg;
    pkt_zero_next = pkt_zero_reg;
    pkt_rfirst_next = pkt_rfirst_reg;
    pending_next = pending_reg;
    partial_next = partial_reg;
    blocks_next = blocks_reg;
    r_idx_next = r_idx_reg;

    if (copy_start) begin
        off_next = copy_off;
        round_first_next = copy_round_first;
        round_last_next = copy_round_last;
        if (copy_round_first) lane0_next = copy_first_strb[0];
    end
    if (beat_in) begin
        off_next = (off_reg + BEAT_BYTES) & cap_mask;
        if (s_first) begin
            pkt_zero_next = at_zero;
            pkt_rfirst_next = rfirst;
        end
    end
    pending_next = pending_reg + {{(QW-1){1'b0}}, beat_in && s_last}
                               - {{(QW-1){1'b0}}, take};
    if (u_valid) begin
        partial_next = u_crc;
        blocks_next = blocks_reg + {31'd0, u_user[2]};
        r_idx_next = u_user[1] ? {AW{1'b0}} : u_user[0] ? start_idx_reg
                   : r_idx_reg + 1'b1;
    end
    if (seed_load) partial_next = seed_value;
    if (clear) blocks_next = 32'd0;
end

wire p_up = beat_in && s_last && !take;
wire p_down = take && !(beat_in && s_last);
localparam [31:0] RB = READY_BELOW;
localparam [31:0] RB_M1 = RB - 32'd1;
localparam [31:0] RB_P1 = RB + 32'd1;
wire [31:0] pending32 = {{(32-QW){1'b0}}, pending_reg};

always @(posedge clk) begin
    off_reg <= off_next;
    below_reg <= p_up ? pending32 < RB_M1 : p_down ? pending32 < RB_P1 : pending32 < RB;
    none_reg <= p_up ? 1'b0 : p_down ? pending_reg == {{(QW-1){1'b0}}, 1'b1} : none_reg;
    round_first_reg <= round_first_next;
    round_last_reg <= round_last_next;
    lane0_reg <= lane0_next;
    pkt_zero_reg <= pkt_zero_next;
    pkt_rfirst_reg <= pkt_rfirst_next;
    pending_reg <= pending_next;
    partial_reg <= partial_next;
    blocks_reg <= blocks_next;
    r_idx_reg <= r_idx_next;
    if (copy_start && copy_round_first) start_idx_reg <= copy_off >> shift_reg;

    r_valid_reg <= u_valid;
    r_crc_reg <= u_crc;
    q_valid_reg <= r_valid_reg;
    q_crc_reg <= r_crc_reg;
    q_addr_reg <= entries_reg + {r_idx_reg[AW-3:0], 2'b00};

    if (rst || drop) begin
        pending_reg <= {QW{1'b0}};
        below_reg <= 1'b1;
        none_reg <= 1'b1;
        r_valid_reg <= 1'b0;
        q_valid_reg <= 1'b0;
    end
    if (rst) begin
        round_first_reg <= 1'b0;
        round_last_reg <= 1'b0;
        lane0_reg <= 1'b1;
        pkt_zero_reg <= 1'b0;
        pkt_rfirst_reg <= 1'b0;
        partial_reg <= 32'd0;
        blocks_reg <= 32'd0;
        r_idx_reg <= {AW{1'b0}};
        start_idx_reg <= {AW{1'b0}};
        off_reg <= {AW{1'b0}};
    end
end

// the queue: QUEUE_DEPTH entries in the array (pending never exceeds QUEUE_DEPTH)
wire [AW+31:0] q_out;
wire q_out_valid;
/* verilator lint_off UNUSEDSIGNAL */
wire q_full, q_empty;
/* verilator lint_on UNUSEDSIGNAL */
rm_fifo #(.WIDTH(AW + 32), .DEPTH(QUEUE_DEPTH)) queue (
    .clk(clk), .rst(rst || drop),
    .in_data({q_addr_reg, q_crc_reg}), .in_valid(q_push), .full(q_full),
    .out_data(q_out), .out_valid(q_out_valid), .out_ready(take), .empty(q_empty)
);

wire [AW-1:0] ent_addr = q_out[AW+31:32];

// clear needs no gate here: it follows a cycle of abort, whose drop emptied the queue
assign req_valid = q_out_valid && !abort;
assign req_pending = q_out_valid;
assign req_addr = ent_addr;
assign req_strb = {{(BYTES-4){1'b0}}, 4'hF} << ent_addr[LSB-1:0];
assign req_data = {(BYTES/4){q_out[31:0]}};
assign beat_ready = !enable || below_reg;
assign idle = none_reg;
assign partial = partial_reg;
assign blocks = blocks_reg;
assign table_tail_addr = ttail_addr_reg;

endmodule

`resetall
