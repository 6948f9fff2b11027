// Ring-mirror IP top level: AXI4-Lite register file + AXI4 master engine.
// Continuously mirrors a pyshm ring's committed bytes into a replica and publishes the
// mirrored position; see hw/README.md and docs/hw.md.
`resetall
`timescale 1ns / 1ps
`default_nettype none

module ring_mirror #(
    parameter DATA_WIDTH = 64,          // AXI4 data bits: 64, 128, 256 or 512
    parameter ADDR_WIDTH = 40,          // AXI4 address bits, 32..64
    parameter ID_WIDTH = 1,             // AXI4 ID bits; the engine always uses ID 0
    parameter MAX_BURST_LEN = 16,       // beats per burst, power of two, 1..256
    parameter MAX_OUTSTANDING = 4,      // read bursts in flight at most, 1..255
    parameter FIFO_DEPTH = 64,          // read-data FIFO beats, power of two >= MAX_BURST_LEN
    parameter RUN_LOG = 16,             // a round copies in runs of at most 2^RUN_LOG beats
    parameter CRC_TABLE = 1,            // 1: build the replica CRC table unit (CAPABILITIES)
    parameter [3:0] AXI_CACHE = 4'b1111,// AxCACHE of every transaction (coherent port: 1111)
    parameter [2:0] AXI_PROT = 3'b010   // AxPROT of every transaction
) (
    input  wire                    aclk,
    input  wire                    aresetn,          // synchronous, active low
    output wire                    irq,              // level, active high

    input  wire [7:0]              s_axil_awaddr,
    input  wire [2:0]              s_axil_awprot,
    input  wire                    s_axil_awvalid,
    output wire                    s_axil_awready,
    input  wire [31:0]             s_axil_wdata,
    input  wire [3:0]              s_axil_wstrb,
    input  wire                    s_axil_wvalid,
    output wire                    s_axil_wready,
    output wire [1:0]              s_axil_bresp,
    output wire                    s_axil_bvalid,
    input  wire                    s_axil_bready,
    input  wire [7:0]              s_axil_araddr,
    input  wire [2:0]              s_axil_arprot,
    input  wire                    s_axil_arvalid,
    output wire                    s_axil_arready,
    output wire [31:0]             s_axil_rdata,
    output wire [1:0]              s_axil_rresp,
    output wire                    s_axil_rvalid,
    input  wire                    s_axil_rready,

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
    input  wire [ID_WIDTH-1:0]     m_axi_bid,
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
    input  wire [ID_WIDTH-1:0]     m_axi_rid,
    input  wire [DATA_WIDTH-1:0]   m_axi_rdata,
    input  wire [1:0]              m_axi_rresp,
    input  wire                    m_axi_rlast,
    input  wire                    m_axi_rvalid,
    output wire                    m_axi_rready
);

// field layout from hw/regmap.yaml (HW_CONFIG)
localparam [31:0] HW_CONFIG = ((MAX_OUTSTANDING % 256) << 24) | (((MAX_BURST_LEN - 1) % 256) << 16)
                            | ((ADDR_WIDTH % 256) << 8) | ((DATA_WIDTH / 8) % 256);
localparam [31:0] CAPABILITIES = CRC_TABLE != 0 ? 32'd1 : 32'd0;   // bit 0: CRC_TABLE

initial begin
    if (CRC_TABLE != 0 && CRC_TABLE != 1) begin
        $error("ring_mirror: CRC_TABLE (%0d) must be 0 or 1", CRC_TABLE);
        $finish;
    end
end

wire rst = !aresetn;

wire cfg_enable, cfg_sync, cfg_soft_reset, cfg_mirrored_load, cfg_ready;
wire cfg_crc_enable, cfg_crc_seed_load;
wire [31:0] cfg_crc_seed, st_crc_partial, st_crc_blocks;
wire [ADDR_WIDTH-1:0] cfg_ring_base, cfg_replica_base, cfg_capacity, cfg_cap_mask;
wire [ADDR_WIDTH-1:0] cfg_part_mask, cfg_cap_less_part;
wire [ADDR_WIDTH-1:0] cfg_tail_addr, cfg_intent_addr, cfg_mirrored_addr;
wire [ADDR_WIDTH-1:0] cfg_replica_tail_addr, cfg_rint_addr;
wire [63:0] cfg_mirrored_value;
wire [31:0] cfg_poll_interval, cfg_irq_progress, cfg_watchdog;
wire [7:0] cfg_fault;
wire st_busy, st_idle, st_error, st_clearing;
wire [7:0] st_fault, st_addr;
wire [63:0] st_value;
wire ev_sync_done, ev_soft_reset_done, ev_fault, ev_progress, ev_overrun;

ring_mirror_regs #(.HW_CONFIG(HW_CONFIG), .CAPABILITIES(CAPABILITIES), .ADDR_WIDTH(ADDR_WIDTH))
regs (
    .clk(aclk), .rst(rst),
    .s_axil_awaddr(s_axil_awaddr), .s_axil_awprot(s_axil_awprot),
    .s_axil_arprot(s_axil_arprot), .s_axil_awvalid(s_axil_awvalid),
    .s_axil_awready(s_axil_awready), .s_axil_wdata(s_axil_wdata),
    .s_axil_wstrb(s_axil_wstrb), .s_axil_wvalid(s_axil_wvalid),
    .s_axil_wready(s_axil_wready), .s_axil_bresp(s_axil_bresp),
    .s_axil_bvalid(s_axil_bvalid), .s_axil_bready(s_axil_bready),
    .s_axil_araddr(s_axil_araddr), .s_axil_arvalid(s_axil_arvalid),
    .s_axil_arready(s_axil_arready), .s_axil_rdata(s_axil_rdata),
    .s_axil_rresp(s_axil_rresp), .s_axil_rvalid(s_axil_rvalid),
    .s_axil_rready(s_axil_rready),
    .cfg_enable(cfg_enable), .cfg_sync(cfg_sync), .cfg_soft_reset(cfg_soft_reset),
    .cfg_mirrored_load(cfg_mirrored_load), .cfg_mirrored_value(cfg_mirrored_value),
    .cfg_ring_base(cfg_ring_base), .cfg_replica_base(cfg_replica_base),
    .cfg_capacity(cfg_capacity), .cfg_cap_mask(cfg_cap_mask), .cfg_part_mask(cfg_part_mask),
    .cfg_cap_less_part(cfg_cap_less_part),
    .cfg_tail_addr(cfg_tail_addr), .cfg_intent_addr(cfg_intent_addr),
    .cfg_mirrored_addr(cfg_mirrored_addr), .cfg_replica_tail_addr(cfg_replica_tail_addr),
    .cfg_rint_addr(cfg_rint_addr),
    .cfg_poll_interval(cfg_poll_interval), .cfg_irq_progress(cfg_irq_progress),
    .cfg_watchdog(cfg_watchdog), .cfg_fault(cfg_fault), .cfg_ready(cfg_ready),
    .cfg_crc_enable(cfg_crc_enable), .cfg_crc_seed_load(cfg_crc_seed_load),
    .cfg_crc_seed(cfg_crc_seed), .st_crc_partial(st_crc_partial),
    .st_crc_blocks(st_crc_blocks),
    .st_busy(st_busy), .st_idle(st_idle), .st_error(st_error), .st_clearing(st_clearing),
    .st_fault(st_fault), .st_addr(st_addr), .st_value(st_value),
    .ev_sync_done(ev_sync_done), .ev_soft_reset_done(ev_soft_reset_done),
    .ev_fault(ev_fault), .ev_progress(ev_progress), .ev_overrun(ev_overrun),
    .irq(irq)
);

ring_mirror_core #(
    .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH),
    .MAX_BURST_LEN(MAX_BURST_LEN), .MAX_OUTSTANDING(MAX_OUTSTANDING),
    .FIFO_DEPTH(FIFO_DEPTH), .RUN_LOG(RUN_LOG), .CRC_TABLE(CRC_TABLE), .AXI_CACHE(AXI_CACHE),
    .AXI_PROT(AXI_PROT)
) core (
    .clk(aclk), .rst(rst),
    .cfg_enable(cfg_enable), .cfg_sync(cfg_sync), .cfg_soft_reset(cfg_soft_reset),
    .cfg_mirrored_load(cfg_mirrored_load), .cfg_mirrored_value(cfg_mirrored_value),
    .cfg_ring_base(cfg_ring_base), .cfg_replica_base(cfg_replica_base),
    .cfg_capacity(cfg_capacity), .cfg_cap_mask(cfg_cap_mask), .cfg_part_mask(cfg_part_mask),
    .cfg_cap_less_part(cfg_cap_less_part),
    .cfg_tail_addr(cfg_tail_addr), .cfg_intent_addr(cfg_intent_addr),
    .cfg_mirrored_addr(cfg_mirrored_addr), .cfg_replica_tail_addr(cfg_replica_tail_addr),
    .cfg_rint_addr(cfg_rint_addr),
    .cfg_poll_interval(cfg_poll_interval), .cfg_irq_progress(cfg_irq_progress),
    .cfg_watchdog(cfg_watchdog), .cfg_fault(cfg_fault), .cfg_ready(cfg_ready),
    .cfg_crc_enable(cfg_crc_enable), .cfg_crc_seed_load(cfg_crc_seed_load),
    .cfg_crc_seed(cfg_crc_seed), .st_crc_partial(st_crc_partial),
    .st_crc_blocks(st_crc_blocks),
    .st_busy(st_busy), .st_idle(st_idle), .st_error(st_error), .st_clearing(st_clearing),
    .st_fault(st_fault), .st_addr(st_addr), .st_value(st_value),
    .ev_sync_done(ev_sync_done), .ev_soft_reset_done(ev_soft_reset_done),
    .ev_fault(ev_fault), .ev_progress(ev_progress), .ev_overrun(ev_overrun),
    .m_axi_awid(m_axi_awid), .m_axi_awaddr(m_axi_awaddr), .m_axi_awlen(m_axi_awlen),
    .m_axi_awsize(m_axi_awsize), .m_axi_awburst(m_axi_awburst), .m_axi_awlock(m_axi_awlock),
    .m_axi_awcache(m_axi_awcache), .m_axi_awprot(m_axi_awprot),
    .m_axi_awvalid(m_axi_awvalid), .m_axi_awready(m_axi_awready),
    .m_axi_wdata(m_axi_wdata), .m_axi_wstrb(m_axi_wstrb), .m_axi_wlast(m_axi_wlast),
    .m_axi_wvalid(m_axi_wvalid), .m_axi_wready(m_axi_wready),
    .m_axi_bid(m_axi_bid), .m_axi_bresp(m_axi_bresp), .m_axi_bvalid(m_axi_bvalid),
    .m_axi_bready(m_axi_bready),
    .m_axi_arid(m_axi_arid), .m_axi_araddr(m_axi_araddr), .m_axi_arlen(m_axi_arlen),
    .m_axi_arsize(m_axi_arsize), .m_axi_arburst(m_axi_arburst), .m_axi_arlock(m_axi_arlock),
    .m_axi_arcache(m_axi_arcache), .m_axi_arprot(m_axi_arprot),
    .m_axi_arvalid(m_axi_arvalid), .m_axi_arready(m_axi_arready),
    .m_axi_rid(m_axi_rid), .m_axi_rdata(m_axi_rdata), .m_axi_rresp(m_axi_rresp),
    .m_axi_rlast(m_axi_rlast), .m_axi_rvalid(m_axi_rvalid), .m_axi_rready(m_axi_rready)
);

endmodule

`resetall
