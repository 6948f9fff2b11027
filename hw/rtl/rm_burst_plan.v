// Burst planner of the ring-mirror IP: splits a run of beats into INCR bursts that never
// cross a MAX_BURST_LEN-beat boundary of the ring offset (so never a 4 KiB boundary and
// never the ring's wrap: both are multiples of MAX_BURST_LEN beats). The AR and AW issuers
// and the B tracker each run one; they see the same sequence of bursts.
//
// The sequence is a first burst up to the next boundary, then full bursts, then the rest.
// After `load` three preparation cycles compute the first burst and split the remainder
// into full bursts (hi) and a last one (lo), so that stepping is a decrement and an
// equality test on registers: no wide carry chain feeds the next burst's length.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module rm_burst_plan #(
    parameter BW = 38,              // bits of a beat count
    parameter MAX_BURST_LEN = 16    // beats per burst at most, a power of two 1..256
) (
    input  wire          clk,
    input  wire          rst,
    input  wire          clear,         // forget the run (after an aborted copy)
    input  wire          load,          // start a run (ignored while one is planned)
    input  wire [BW-1:0] load_beats,    // beats of the run, >= 1
    input  wire [7:0]    load_low,      // index of the first beat in its aligned group
    input  wire          step,          // the burst shown on `beats` was taken
    output wire          valid,         // `beats` holds the next burst
    output wire [8:0]    beats,         // 1..MAX_BURST_LEN
    output wire          done           // every beat of the run was planned (or idle)
);

localparam MB_LOG = $clog2(MAX_BURST_LEN);
localparam MBW = MB_LOG > 0 ? MB_LOG : 1;
localparam [8:0] MAXB = MAX_BURST_LEN[8:0];
localparam [1:0] P_IDLE = 2'd0, P_PREP = 2'd1, P_FIRST = 2'd2, P_BODY = 2'd3;

reg [1:0] phase_reg, phase_next;
reg [1:0] prep_reg, prep_next;             // preparation step 0..2
reg [BW-1:0] left_reg, left_next;          // beats of the run not yet planned
reg [8:0] to_bound_reg, to_bound_next;     // beats from the first beat to its boundary
reg [8:0] first_reg, first_next;
reg [BW-1:0] hi_reg, hi_next;              // full bursts after the first one
reg [MBW-1:0] lo_reg, lo_next;             // beats of the last, short burst (0: none)
reg hi_nz_reg, hi_nz_next;

/* verilator lint_off UNUSEDSIGNAL */
wire [BW-1:0] rest = left_reg - {{(BW-9){1'b0}}, first_reg};
/* verilator lint_on UNUSEDSIGNAL */
wire left_ge_bound = |(left_reg >> MBW) || {{(9-MBW){1'b0}}, left_reg[MBW-1:0]} >= to_bound_reg;

always @* begin
    phase_next = phase_reg;
    prep_next = prep_reg;
    left_next = left_reg;
    to_bound_next = to_bound_reg;
    first_next = first_reg;
    hi_next = hi_reg;
    lo_next = lo_reg;
    hi_nz_next = hi_nz_reg;
    case (phase_reg)
        P_IDLE: begin
            if (load) begin
                left_next = load_beats;
                to_bound_next = MAXB - {1'b0, load_low & (MAXB[7:0] - 8'd1)};
                prep_next = 2'd0;
                phase_next = P_PREP;
            end
        end
        P_PREP: begin
            prep_next = prep_reg + 2'd1;
            case (prep_reg)
                2'd0: first_next = left_ge_bound ? to_bound_reg
                                                 : {{(9-MBW){1'b0}}, left_reg[MBW-1:0]};
                2'd1: begin
                    hi_next = rest >> MB_LOG;
                    lo_next = rest[MBW-1:0] & (MAXB[MBW-1:0] - 1'b1);
                end
                default: begin
                    hi_nz_next = |hi_reg;
                    phase_next = P_FIRST;
                end
            endcase
        end
        P_FIRST: begin
            if (step) begin
                phase_next = (hi_nz_reg || lo_reg != 0) ? P_BODY : P_IDLE;
            end
        end
        default: begin
            if (step) begin
                if (hi_nz_reg) begin
                    hi_next = hi_reg - 1'b1;
                    hi_nz_next = hi_reg != {{(BW-1){1'b0}}, 1'b1};
                    if (hi_reg == {{(BW-1){1'b0}}, 1'b1} && lo_reg == 0) begin
                        phase_next = P_IDLE;
                    end
                end else begin
                    lo_next = 0;
                    phase_next = P_IDLE;
                end
            end
        end
    endcase
end

always @(posedge clk) begin
    phase_reg <= phase_next;
    prep_reg <= prep_next;
    left_reg <= left_next;
    to_bound_reg <= to_bound_next;
    first_reg <= first_next;
    hi_reg <= hi_next;
    lo_reg <= lo_next;
    hi_nz_reg <= hi_nz_next;
    if (rst || clear) begin
        phase_reg <= P_IDLE;
        prep_reg <= 2'd0;
        left_reg <= 0;
        to_bound_reg <= 9'd0;
        first_reg <= 9'd0;
        hi_reg <= 0;
        lo_reg <= 0;
        hi_nz_reg <= 1'b0;
    end
end

assign valid = phase_reg == P_FIRST || phase_reg == P_BODY;
assign beats = phase_reg == P_FIRST ? first_reg
             : (hi_nz_reg ? MAXB : {{(9-MBW){1'b0}}, lo_reg});
assign done = phase_reg == P_IDLE;

endmodule

`resetall
