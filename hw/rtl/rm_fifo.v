// Synchronous first-word-fall-through FIFO for the ring-mirror engine.
// The output word is valid whenever out_valid is high; it is removed on out_valid && out_ready.
// Reads are asynchronous from the storage array so that the word at the head is visible
// in the same cycle it becomes the head (no bubble between bursts); synthesis maps the
// array to distributed RAM.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module rm_fifo #(
    parameter WIDTH = 64,   // bits per entry
    parameter DEPTH = 64    // entries; a power of two >= 2
) (
    input  wire             clk,
    input  wire             rst,
    input  wire [WIDTH-1:0] in_data,
    input  wire             in_valid,    // push; the caller guarantees !full
    output wire             full,
    output wire [WIDTH-1:0] out_data,
    output wire             out_valid,
    input  wire             out_ready
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

wire empty = wr_ptr_reg == rd_ptr_reg;
assign full = wr_ptr_reg == {~rd_ptr_reg[PTR_W], rd_ptr_reg[PTR_W-1:0]};
assign out_valid = !empty;
assign out_data = mem[rd_ptr_reg[PTR_W-1:0]];

always @* begin
    wr_ptr_next = wr_ptr_reg;
    rd_ptr_next = rd_ptr_reg;
    if (in_valid && !full) begin
        wr_ptr_next = wr_ptr_reg + 1'b1;
    end
    if (out_ready && !empty) begin
        rd_ptr_next = rd_ptr_reg + 1'b1;
    end
end

always @(posedge clk) begin
    if (in_valid && !full) begin
        mem[wr_ptr_reg[PTR_W-1:0]] <= in_data;
    end
    wr_ptr_reg <= wr_ptr_next;
    rd_ptr_reg <= rd_ptr_next;
    if (rst) begin
        wr_ptr_reg <= 0;
        rd_ptr_reg <= 0;
    end
end

endmodule

`resetall
