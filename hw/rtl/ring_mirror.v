// Ring-mirror IP top level: AXI4-Lite register file + AXI4 master engine.
// Continuously mirrors a pyshm ring's committed bytes into a replica and publishes the
// mirrored position, and restores checksummed chunks from a buffer into the ring (the
// restore copy mode, rm_restore); see hw/README.md and docs/hw.md.
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
    parameter RESTORE = 1,              // 1: build the restore copy mode, rm_restore (CAPABILITIES)
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
localparam [31:0] CAPABILITIES = (CRC_TABLE != 0 ? 32'd1 : 32'd0)    // bit 0: CRC_TABLE
                               | (RESTORE != 0 ? 32'd2 : 32'd0);     // bit 1: RESTORE

initial begin
    if (CRC_TABLE != 0 && CRC_TABLE != 1) begin
        $error("ring_mirror: CRC_TABLE (%0d) must be 0 or 1", CRC_TABLE);
        $finish;
    end
    if (RESTORE != 0 && RESTORE != 1) begin
        $error("ring_mirror: RESTORE (%0d) must be 0 or 1", RESTORE);
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


// The restore copy mode (rm_restore) has its own mover and owns the AXI4 master while a
// job runs (rs_bus); the two never have transactions outstanding at the same time: a job
// starts only while mirroring is stopped and idle, ENABLE and SYNC are refused while it
// runs (and masked here as well), and a SOFT_RESET reaches the mirroring engine only once
// the restore mode has stopped and is quiet. rs_busy, rs_bus and rs_idle are flip-flops
// of rm_restore of their own (rs_bus: the job's `running` a cycle late), so no net of the
// restore controller's state reaches the mirroring side through logic; rm_restore gates
// its own bus inputs.
wire rs_busy, rs_bus, rs_idle;
/* verilator lint_off UNUSEDSIGNAL */    // (unused when built with RESTORE = 0)
wire x_wr, x_rd_take;
wire [7:0] x_wr_addr;
wire [31:0] x_wr_data;
wire [3:0] x_wr_strb;
/* verilator lint_on UNUSEDSIGNAL */
wire [31:0] x_rd_data;
wire [ID_WIDTH-1:0] c_awid, c_arid, r_awid, r_arid;
wire [ADDR_WIDTH-1:0] c_awaddr, c_araddr, r_awaddr, r_araddr;
wire [7:0] c_awlen, c_arlen, r_awlen, r_arlen;
wire [2:0] c_awsize, c_arsize, r_awsize, r_arsize, c_awprot, c_arprot, r_awprot, r_arprot;
wire [1:0] c_awburst, c_arburst, r_awburst, r_arburst;
wire c_awlock, c_arlock, r_awlock, r_arlock;
wire [3:0] c_awcache, c_arcache, r_awcache, r_arcache;
wire c_awvalid, c_awready, c_wlast, c_wvalid, c_wready, c_bvalid, c_bready;
wire c_arvalid, c_arready, c_rlast, c_rvalid, c_rready;
wire r_awvalid, r_wlast, r_wvalid, r_bready, r_arvalid, r_rready;
wire [DATA_WIDTH-1:0] c_wdata, r_wdata, c_rdata;
wire [DATA_WIDTH/8-1:0] c_wstrb, r_wstrb;
wire [ID_WIDTH-1:0] c_bid, c_rid;
wire [1:0] c_bresp, c_rresp;

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
    .x_wr(x_wr), .x_wr_addr(x_wr_addr), .x_wr_data(x_wr_data), .x_wr_strb(x_wr_strb),
    .x_rd_take(x_rd_take), .x_rd_data(x_rd_data), .x_busy(rs_busy),
    .irq(irq)
);

ring_mirror_core #(
    .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH),
    .MAX_BURST_LEN(MAX_BURST_LEN), .MAX_OUTSTANDING(MAX_OUTSTANDING),
    .FIFO_DEPTH(FIFO_DEPTH), .RUN_LOG(RUN_LOG), .CRC_TABLE(CRC_TABLE), .AXI_CACHE(AXI_CACHE),
    .AXI_PROT(AXI_PROT)
) core (
    .clk(aclk), .rst(rst),
    .cfg_enable(cfg_enable && !rs_busy), .cfg_sync(cfg_sync && !rs_busy),
    .cfg_soft_reset(cfg_soft_reset && rs_idle),
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
    .m_axi_awid(c_awid), .m_axi_awaddr(c_awaddr), .m_axi_awlen(c_awlen),
    .m_axi_awsize(c_awsize), .m_axi_awburst(c_awburst), .m_axi_awlock(c_awlock),
    .m_axi_awcache(c_awcache), .m_axi_awprot(c_awprot),
    .m_axi_awvalid(c_awvalid), .m_axi_awready(c_awready),
    .m_axi_wdata(c_wdata), .m_axi_wstrb(c_wstrb), .m_axi_wlast(c_wlast),
    .m_axi_wvalid(c_wvalid), .m_axi_wready(c_wready),
    .m_axi_bid(c_bid), .m_axi_bresp(c_bresp), .m_axi_bvalid(c_bvalid),
    .m_axi_bready(c_bready),
    .m_axi_arid(c_arid), .m_axi_araddr(c_araddr), .m_axi_arlen(c_arlen),
    .m_axi_arsize(c_arsize), .m_axi_arburst(c_arburst), .m_axi_arlock(c_arlock),
    .m_axi_arcache(c_arcache), .m_axi_arprot(c_arprot),
    .m_axi_arvalid(c_arvalid), .m_axi_arready(c_arready),
    .m_axi_rid(c_rid), .m_axi_rdata(c_rdata), .m_axi_rresp(c_rresp),
    .m_axi_rlast(c_rlast), .m_axi_rvalid(c_rvalid), .m_axi_rready(c_rready)
);

generate
    if (RESTORE != 0) begin : g_restore
    rm_restore #(
        .DATA_WIDTH(DATA_WIDTH), .ADDR_WIDTH(ADDR_WIDTH), .ID_WIDTH(ID_WIDTH),
        .MAX_BURST_LEN(MAX_BURST_LEN), .MAX_OUTSTANDING(MAX_OUTSTANDING),
        .FIFO_DEPTH(FIFO_DEPTH), .AXI_CACHE(AXI_CACHE), .AXI_PROT(AXI_PROT)
    ) restore (
        .clk(aclk), .rst(rst),
        .x_wr(x_wr), .x_wr_addr(x_wr_addr), .x_wr_data(x_wr_data), .x_wr_strb(x_wr_strb),
        .x_rd_addr(st_addr), .x_rd_take(x_rd_take), .x_rd_data(x_rd_data),
        .cfg_ring_base(cfg_ring_base), .cfg_capacity(cfg_capacity), .cfg_cap_mask(cfg_cap_mask),
        .cfg_watchdog(cfg_watchdog), .cfg_soft_reset(cfg_soft_reset),
        .mirror_stopped(st_idle && !cfg_enable && !cfg_sync),
        .busy(rs_busy), .bus(rs_bus), .idle(rs_idle),
        .m_axi_awid(r_awid), .m_axi_awaddr(r_awaddr), .m_axi_awlen(r_awlen),
        .m_axi_awsize(r_awsize), .m_axi_awburst(r_awburst), .m_axi_awlock(r_awlock),
        .m_axi_awcache(r_awcache), .m_axi_awprot(r_awprot),
        .m_axi_awvalid(r_awvalid), .m_axi_awready(m_axi_awready),
        .m_axi_wdata(r_wdata), .m_axi_wstrb(r_wstrb), .m_axi_wlast(r_wlast),
        .m_axi_wvalid(r_wvalid), .m_axi_wready(m_axi_wready),
        .m_axi_bresp(m_axi_bresp), .m_axi_bvalid(m_axi_bvalid), .m_axi_bready(r_bready),
        .m_axi_arid(r_arid), .m_axi_araddr(r_araddr), .m_axi_arlen(r_arlen),
        .m_axi_arsize(r_arsize), .m_axi_arburst(r_arburst), .m_axi_arlock(r_arlock),
        .m_axi_arcache(r_arcache), .m_axi_arprot(r_arprot),
        .m_axi_arvalid(r_arvalid), .m_axi_arready(m_axi_arready),
        .m_axi_rdata(m_axi_rdata), .m_axi_rresp(m_axi_rresp), .m_axi_rlast(m_axi_rlast),
        .m_axi_rvalid(m_axi_rvalid), .m_axi_rready(r_rready)
    );

    end else begin : g_no_restore
        // no restore copy mode: its registers read 0 and ignore writes (CAPABILITIES.RESTORE 0)
        assign rs_busy = 1'b0;
        assign rs_bus = 1'b0;
        assign rs_idle = 1'b1;
        assign x_rd_data = 32'd0;
        assign {r_awid, r_awaddr, r_awlen, r_awsize, r_awburst, r_awlock, r_awcache, r_awprot,
                r_awvalid, r_wdata, r_wstrb, r_wlast, r_wvalid, r_bready, r_arid, r_araddr,
                r_arlen, r_arsize, r_arburst, r_arlock, r_arcache, r_arprot, r_arvalid,
                r_rready} = 0;
    end
endgenerate

// the AXI4 master: the restore mode's while it owns the bus, else the mirroring engine's
assign m_axi_awid = rs_bus ? r_awid : c_awid;
assign m_axi_awaddr = rs_bus ? r_awaddr : c_awaddr;
assign m_axi_awlen = rs_bus ? r_awlen : c_awlen;
assign m_axi_awsize = rs_bus ? r_awsize : c_awsize;
assign m_axi_awburst = rs_bus ? r_awburst : c_awburst;
assign m_axi_awlock = rs_bus ? r_awlock : c_awlock;
assign m_axi_awcache = rs_bus ? r_awcache : c_awcache;
assign m_axi_awprot = rs_bus ? r_awprot : c_awprot;
assign m_axi_awvalid = rs_bus ? r_awvalid : c_awvalid;
assign m_axi_wdata = rs_bus ? r_wdata : c_wdata;
assign m_axi_wstrb = rs_bus ? r_wstrb : c_wstrb;
assign m_axi_wlast = rs_bus ? r_wlast : c_wlast;
assign m_axi_wvalid = rs_bus ? r_wvalid : c_wvalid;
assign m_axi_bready = rs_bus ? r_bready : c_bready;
assign m_axi_arid = rs_bus ? r_arid : c_arid;
assign m_axi_araddr = rs_bus ? r_araddr : c_araddr;
assign m_axi_arlen = rs_bus ? r_arlen : c_arlen;
assign m_axi_arsize = rs_bus ? r_arsize : c_arsize;
assign m_axi_arburst = rs_bus ? r_arburst : c_arburst;
assign m_axi_arlock = rs_bus ? r_arlock : c_arlock;
assign m_axi_arcache = rs_bus ? r_arcache : c_arcache;
assign m_axi_arprot = rs_bus ? r_arprot : c_arprot;
assign m_axi_arvalid = rs_bus ? r_arvalid : c_arvalid;
assign m_axi_rready = rs_bus ? r_rready : c_rready;
assign c_awready = m_axi_awready && !rs_bus;
assign c_wready = m_axi_wready && !rs_bus;
assign c_bid = m_axi_bid;
assign c_bresp = m_axi_bresp;
assign c_bvalid = m_axi_bvalid && !rs_bus;
assign c_arready = m_axi_arready && !rs_bus;
assign c_rid = m_axi_rid;
assign c_rdata = m_axi_rdata;
assign c_rresp = m_axi_rresp;
assign c_rlast = m_axi_rlast;
assign c_rvalid = m_axi_rvalid && !rs_bus;

endmodule

`resetall
