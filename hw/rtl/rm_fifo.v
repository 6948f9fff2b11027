// Synchronous first-word-fall-through FIFO of the ring-mirror IP with a registered output.
// The storage array is read synchronously into an output register, so synthesis maps it to
// block RAM (ECP5 DP16KD, Xilinx RAMB) or to LUT RAM with its output flip-flops, and no
// RAM read sits on a combinational path to the consumer. One word can enter and one leave
// every cycle; a written word reaches out_data two cycles later. The capacity is DEPTH
// words in the array plus the output register.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module rm_fifo #(
    parameter WIDTH = 64,   // bits per entry
    parameter DEPTH = 64    // entries in the array; a power of two >= 2
) (
    input  wire             clk,
    input  wire             rst,
    input  wire [WIDTH-1:0] in_data,
    input  wire             in_valid,    // push; the caller guarantees room (credits)
    output wire             full,
    output wire [WIDTH-1:0] out_data,
    output wire             out_valid,
    input  wire             out_ready,
    output wire             empty        // nothing in the array nor in the output register
);

localparam PTR_W = $clog2(DEPTH);

initial begin
    if (DEPTH < 2 || (DEPTH & (DEPTH - 1)) != 0) begin
        $error("rm_fifo: DEPTH (%0d) must be a power of two >= 2", DEPTH);
        $finish;
    end
end

reg [WIDTH-1:0] mem [0:DEPTH-1];
// One extra pointer bit tells full from empty.
reg [PTR_W:0] wr_ptr_reg, wr_ptr_next;
reg [PTR_W:0] rd_ptr_reg, rd_ptr_next;
reg [WIDTH-1:0] out_data_reg;
reg out_valid_reg, out_valid_next;

wire mem_empty = wr_ptr_reg == rd_ptr_reg;
assign full = wr_ptr_reg == {~rd_ptr_reg[PTR_W], rd_ptr_reg[PTR_W-1:0]};
// refill the output register when it is empty or being emptied this cycle
wire load = !mem_empty && (!out_valid_reg || out_ready);

always @* begin
    wr_ptr_next = wr_ptr_reg;
    rd_ptr_next = rd_ptr_reg;
    out_valid_next = out_valid_reg;
    if (in_valid && !full) begin
        wr_ptr_next = wr_ptr_reg + 1'b1;
    end
    if (load) begin
        rd_ptr_next = rd_ptr_reg + 1'b1;
        out_valid_next = 1'b1;
    end else if (out_ready) begin
        out_valid_next = 1'b0;
    end
end

always @(posedge clk) begin
    if (in_valid && !full) begin
        mem[wr_ptr_reg[PTR_W-1:0]] <= in_data;
    end
    if (load) begin
        out_data_reg <= mem[rd_ptr_reg[PTR_W-1:0]];
    end
end

always @(posedge clk) begin
    wr_ptr_reg <= wr_ptr_next;
    rd_ptr_reg <= rd_ptr_next;
    out_valid_reg <= out_valid_next;
    if (rst) begin
        wr_ptr_reg <= 0;
        rd_ptr_reg <= 0;
        out_valid_reg <= 1'b0;
    end
end

assign out_data = out_data_reg;
assign out_valid = out_valid_reg;
assign empty = mem_empty && !out_valid_reg;

endmodule

`resetall
