// CRC32C (Castagnoli, reflected polynomial 0x82F63B78) of a byte stream, one bus-width
// beat per clock, for the ring-mirror IP's write data (replica CRC table, restore copy
// mode). A packet is a run of beats from `s_first` to `s_last`; its result is the value
// the `crc32c` Python package returns for the packet's bytes continued from `s_seed`
// (crc32c.crc32c(bytes, value=seed); seed 0 starts a new CRC).
//
// Beats: the unit takes a beat in every cycle `s_valid` is high (no back-pressure: it
// observes a stream somebody else paces) and gives each packet's result 7 + log2(BYTES)
// cycles after its last beat, in order, with the packet's `s_user`. Byte lanes are little endian
// (lane 0 is the first byte) and `s_strb` marks the bytes that count; they must be
// contiguous within a beat and continue the previous beat's: the first beat may start
// above lane 0, the last may end below the top lane, a beat in between has every lane or
// none (a beat with none is skipped). A single-beat packet may have any contiguous strobe,
// or none (the result is then the seed).
//
// How: the loop register R is the raw CRC state (inverted value). A beat advances it by
// the whole beat, R' = A*R ^ F(beat), with the bytes outside the strobe taken as zero:
//   - leading lanes (first beat): the seed is XORed into the data at the first valid lane
//     (what a reflected CRC does with its state); bytes of the seed that fall beyond the
//     beat pass into R' directly, so the zeros before it cost nothing;
//   - trailing lanes (last beat): the beat added m = BYTES - end zero bytes; the result is
//     moved back by m zero bytes (multiplied by A1^-m, A1 = one zero byte, invertible
//     since the polynomial's constant term is 1) in a pipeline after the loop.
// Only R' = A*R ^ D is a loop (a 32x32 XOR matrix and a select); F(beat) is computed in
// registered stages (64-bit lane groups, then their sum) and the trailing correction is
// a chain of registered conditional steps, one per bit of m.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module rm_crc32c #(
    parameter DATA_WIDTH = 64,          // bits per beat: a power of two, 32..512
    parameter USER_WIDTH = 1            // sideband returned with each result
) (
    input  wire                    clk,
    input  wire                    rst,            // synchronous: drops every beat in flight

    input  wire                    s_valid,
    input  wire [DATA_WIDTH-1:0]   s_data,
    input  wire [DATA_WIDTH/8-1:0] s_strb,
    input  wire                    s_first,        // first beat of a packet: start from s_seed
    input  wire                    s_last,         // last beat: the result follows
    input  wire [31:0]             s_seed,         // CRC the packet continues (with s_first)
    input  wire [USER_WIDTH-1:0]   s_user,         // returned with the result (with s_last)

    output wire                    m_valid,
    output wire [31:0]             m_crc,
    output wire [USER_WIDTH-1:0]   m_user
);

localparam BYTES = DATA_WIDTH / 8;
localparam LB = $clog2(BYTES);                  // bits of a lane index
localparam GW = DATA_WIDTH < 64 ? DATA_WIDTH : 64;  // lane group of the first XOR stage
localparam NG = DATA_WIDTH / GW;
localparam [31:0] POLY = 32'h82F63B78;
localparam SW = 32 + DATA_WIDTH;                // the seed moved to its lane, beat + overflow

initial begin
    if (DATA_WIDTH < 32 || DATA_WIDTH > 512 || (DATA_WIDTH & (DATA_WIDTH - 1)) != 0) begin
        $error("rm_crc32c: DATA_WIDTH (%0d) must be a power of two, 32..512", DATA_WIDTH);
        $finish;
    end
    if (USER_WIDTH < 1) begin
        $error("rm_crc32c: USER_WIDTH (%0d) must be at least 1", USER_WIDTH);
        $finish;
    end
end

// ---------------------------------------------------------------- XOR matrices
// Computed at elaboration as columns (one 32-bit state per input bit), each from the
// previous by one LFSR step: a few thousand 32-bit steps, so Yosys's constant-function
// evaluator (slow on wide vectors) elaborates even the 256-bit unit in seconds.

// one step of the raw state with a zero data bit, and its inverse (POLY's top bit is 1,
// so the bit shifted out is the new top bit)
function [31:0] step0(input [31:0] s);
    begin
        step0 = (s >> 1) ^ (s[0] ? POLY : 32'd0);
    end
endfunction

function [31:0] unstep0(input [31:0] s);
    begin
        unstep0 = ((s ^ (s[31] ? POLY : 32'd0)) << 1) | {31'd0, s[31]};
    end
endfunction

// Column i of F (the state the beat's data bits make from state 0, bit 0 first): data bit
// i alone sets the state to POLY, then the beat's DATA_WIDTH-1-i later bits step it. The
// state's own part A*R is F of R XORed into the first 32 data bits (DATA_WIDTH >= 32), so
// columns 0..31 serve for the state bits too.
function [32*DATA_WIDTH-1:0] data_cols(input integer width);
    reg [31:0] c;
    integer i;
    begin
        data_cols = {(32*DATA_WIDTH){1'b0}};
        c = POLY;
        for (i = width - 1; i >= 0; i = i - 1) begin
            data_cols[i*32 +: 32] = c;
            c = step0(c);
        end
    end
endfunction

// Columns of the raw state `nbits` zero bits earlier (the inverse of feeding zeros)
function [32*32-1:0] unzero_cols(input integer nbits);
    reg [31:0] c;
    integer i, j;
    begin
        for (j = 0; j < 32; j = j + 1) begin
            c = 32'd1 << j;
            for (i = 0; i < nbits; i = i + 1) begin
                c = unstep0(c);
            end
            unzero_cols[j*32 +: 32] = c;
        end
    end
endfunction

localparam [32*DATA_WIDTH-1:0] DCOLS = data_cols(DATA_WIDTH);

// ---------------------------------------------------------------- stage A: inputs
reg a_valid_reg, a_valid_next;
reg [DATA_WIDTH-1:0] a_data_reg, a_data_next;
reg [BYTES-1:0] a_strb_reg, a_strb_next;
reg a_first_reg, a_first_next;
reg a_last_reg, a_last_next;
reg [31:0] a_seed_reg, a_seed_next;
reg [USER_WIDTH-1:0] a_user_reg, a_user_next;

integer k;
integer gk;                                      // (the clocked block's own loop index)
always @* begin
    a_valid_next = s_valid;
    a_first_next = s_first;
    a_last_next = s_last;
    a_strb_next = s_strb;
    a_seed_next = ~s_seed;                      // the raw state the packet continues
    a_user_next = s_user;
    for (k = 0; k < BYTES; k = k + 1) begin
        a_data_next[k*8 +: 8] = s_strb[k] ? s_data[k*8 +: 8] : 8'd0;
    end
end

// ---------------------------------------------------------------- stage B: lanes
// lo: first lane counted (BYTES when none); m: zero bytes after the last lane counted
reg b_valid_reg, b_valid_next;
reg [DATA_WIDTH-1:0] b_data_reg, b_data_next;
reg b_first_reg, b_first_next;
reg b_last_reg, b_last_next;
reg b_upd_reg, b_upd_next;                       // the beat changes the state
reg [LB:0] b_lo_reg, b_lo_next;
reg [LB-1:0] b_m_reg, b_m_next;
reg [31:0] b_seed_reg, b_seed_next;
reg [USER_WIDTH-1:0] b_user_reg, b_user_next;

always @* begin
    b_valid_next = a_valid_reg;
    b_data_next = a_data_reg;
    b_first_next = a_first_reg;
    b_last_next = a_last_reg;
    b_seed_next = a_seed_reg;
    b_user_next = a_user_reg;
    b_lo_next = BYTES[LB:0];
    for (k = BYTES - 1; k >= 0; k = k - 1) begin
        if (a_strb_reg[k]) b_lo_next = k[LB:0];
    end
    b_m_next = {LB{1'b0}};
    for (k = 0; k < BYTES; k = k + 1) begin
        if (a_strb_reg[k]) b_m_next = BYTES[LB-1:0] - 1'b1 - k[LB-1:0];
    end
    // an empty beat inside a packet adds nothing; an empty last beat ends it as it is
    b_upd_next = a_first_reg || a_strb_reg != {BYTES{1'b0}};
end

// ---------------------------------------------------------------- stage C: seed in place
reg c_valid_reg, c_valid_next;
reg [DATA_WIDTH-1:0] c_data_reg, c_data_next;
reg [31:0] c_high_reg, c_high_next;              // seed bytes beyond the beat
reg c_first_reg, c_first_next;
reg c_last_reg, c_last_next;
reg c_upd_reg, c_upd_next;
reg [LB-1:0] c_m_reg, c_m_next;
reg [USER_WIDTH-1:0] c_user_reg, c_user_next;
reg [SW-1:0] seed_at_lane;

always @* begin
    seed_at_lane = {{DATA_WIDTH{1'b0}}, b_first_reg ? b_seed_reg : 32'd0} << {b_lo_reg, 3'b000};
    c_valid_next = b_valid_reg;
    c_data_next = b_data_reg ^ seed_at_lane[DATA_WIDTH-1:0];
    c_high_next = seed_at_lane[SW-1:DATA_WIDTH];
    c_first_next = b_first_reg;
    c_last_next = b_last_reg;
    c_upd_next = b_upd_reg;
    c_m_next = b_m_reg;
    c_user_next = b_user_reg;
end

// ---------------------------------------------------------------- stages D, E: F(beat)
reg [31:0] r_reg, r_next;                        // the loop (stage F)
reg [LB-1:0] m_hold_reg;                         // zero bytes after the packet's last byte
reg d_valid_reg;
reg [32*NG-1:0] d_part_reg;                     // F of each lane group alone
reg [31:0] d_high_reg;
reg d_first_reg, d_last_reg, d_upd_reg;
reg [LB-1:0] d_m_reg;
reg [USER_WIDTH-1:0] d_user_reg;
wire [32*NG-1:0] d_part_next;

genvar g, o, ci;
wire [31:0] r_adv;                               // A*R: the state after BYTES zero bytes
generate
    for (o = 0; o < 32; o = o + 1) begin : bit_out
        wire [DATA_WIDTH-1:0] row;               // constant: the inputs of output bit o
        for (ci = 0; ci < DATA_WIDTH; ci = ci + 1) begin : col
            assign row[ci] = DCOLS[ci*32 + o];
        end
        for (g = 0; g < NG; g = g + 1) begin : group
            assign d_part_next[32*g + o] = ^(c_data_reg[g*GW +: GW] & row[g*GW +: GW]);
        end
        assign r_adv[o] = ^(r_reg & row[31:0]);
    end
endgenerate

reg e_valid_reg;
reg [31:0] e_d_reg, e_d_next;
reg e_first_reg, e_last_reg, e_upd_reg;
reg [LB-1:0] e_m_reg;
reg [USER_WIDTH-1:0] e_user_reg;

always @* begin
    e_d_next = d_high_reg;
    for (k = 0; k < NG; k = k + 1) begin
        e_d_next = e_d_next ^ d_part_reg[32*k +: 32];
    end
end

// ---------------------------------------------------------------- stage F: the loop
reg f_valid_reg;                                 // a result: r_reg holds it this cycle
reg [LB-1:0] f_m_reg;
reg [USER_WIDTH-1:0] f_user_reg;
always @* begin
    r_next = r_reg;
    if (e_valid_reg && e_upd_reg) begin
        r_next = (e_first_reg ? 32'd0 : r_adv) ^ e_d_reg;
    end
end

// ---------------------------------------------------------------- stages G: trailing zeros
// step j undoes 2^j zero bytes when bit j of m is set
reg [LB:0] g_valid_reg;
reg [32*(LB+1)-1:0] g_val_reg;
reg [LB*(LB+1)-1:0] g_m_reg;
reg [USER_WIDTH*(LB+1)-1:0] g_user_reg;
wire [32*LB-1:0] g_step;

generate
    for (g = 0; g < LB; g = g + 1) begin : unzero
        localparam [32*32-1:0] UCOLS = unzero_cols(8 << g);
        for (o = 0; o < 32; o = o + 1) begin : bit_out
            wire [31:0] row;
            for (ci = 0; ci < 32; ci = ci + 1) begin : col
                assign row[ci] = UCOLS[ci*32 + o];
            end
            assign g_step[32*g + o] = ^(g_val_reg[32*g +: 32] & row);
        end
    end
endgenerate

always @(posedge clk) begin
    a_valid_reg <= a_valid_next;
    a_data_reg <= a_data_next;
    a_strb_reg <= a_strb_next;
    a_first_reg <= a_first_next;
    a_last_reg <= a_last_next;
    a_seed_reg <= a_seed_next;
    a_user_reg <= a_user_next;

    b_valid_reg <= b_valid_next;
    b_data_reg <= b_data_next;
    b_first_reg <= b_first_next;
    b_last_reg <= b_last_next;
    b_upd_reg <= b_upd_next;
    b_lo_reg <= b_lo_next;
    b_m_reg <= b_m_next;
    b_seed_reg <= b_seed_next;
    b_user_reg <= b_user_next;

    c_valid_reg <= c_valid_next;
    c_data_reg <= c_data_next;
    c_high_reg <= c_high_next;
    c_first_reg <= c_first_next;
    c_last_reg <= c_last_next;
    c_upd_reg <= c_upd_next;
    c_m_reg <= c_m_next;
    c_user_reg <= c_user_next;

    d_valid_reg <= c_valid_reg;
    d_part_reg <= d_part_next;
    d_high_reg <= c_high_reg;
    d_first_reg <= c_first_reg;
    d_last_reg <= c_last_reg;
    d_upd_reg <= c_upd_reg;
    d_m_reg <= c_m_reg;
    d_user_reg <= c_user_reg;

    e_valid_reg <= d_valid_reg;
    e_d_reg <= e_d_next;
    e_first_reg <= d_first_reg;
    e_last_reg <= d_last_reg;
    e_upd_reg <= d_upd_reg;
    e_m_reg <= d_m_reg;
    e_user_reg <= d_user_reg;

    r_reg <= r_next;
    f_valid_reg <= e_valid_reg && e_last_reg;
    // an empty last beat: what the beat with the last byte added
    if (e_valid_reg && e_upd_reg) m_hold_reg <= e_m_reg;
    f_m_reg <= e_upd_reg ? e_m_reg : m_hold_reg;
    f_user_reg <= e_user_reg;

    g_valid_reg[0] <= f_valid_reg;
    g_val_reg[31:0] <= r_reg;
    g_m_reg[LB-1:0] <= f_m_reg;
    g_user_reg[USER_WIDTH-1:0] <= f_user_reg;
    for (gk = 0; gk < LB; gk = gk + 1) begin
        g_valid_reg[gk + 1] <= g_valid_reg[gk];
        g_val_reg[32*(gk+1) +: 32] <= g_m_reg[LB*gk + gk] ? g_step[32*gk +: 32]
                                                        : g_val_reg[32*gk +: 32];
        g_m_reg[LB*(gk+1) +: LB] <= g_m_reg[LB*gk +: LB];
        g_user_reg[USER_WIDTH*(gk+1) +: USER_WIDTH] <= g_user_reg[USER_WIDTH*gk +: USER_WIDTH];
    end

    if (rst) begin
        a_valid_reg <= 1'b0;
        b_valid_reg <= 1'b0;
        c_valid_reg <= 1'b0;
        d_valid_reg <= 1'b0;
        e_valid_reg <= 1'b0;
        f_valid_reg <= 1'b0;
        g_valid_reg <= {(LB+1){1'b0}};
        r_reg <= 32'd0;
        m_hold_reg <= {LB{1'b0}};
    end
end

assign m_valid = g_valid_reg[LB];
assign m_crc = ~g_val_reg[32*LB +: 32];
assign m_user = g_user_reg[USER_WIDTH*LB +: USER_WIDTH];

endmodule

`resetall
