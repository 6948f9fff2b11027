# Block design for the Kria KV260: Zynq UltraScale+ PS, ring-mirror IP on the coherent
# S_AXI_HPC0_FPD port (see hw/README.md for why), registers on M_AXI_HPM0_FPD, interrupt
# on pl_ps_irq0. Sourced by build_kv260.tcl after the IP repository is set.
set vlnv "pyshm:ip:ring_mirror:1.0"
set design ring_mirror_kv260

create_bd_design $design

set ps [create_bd_cell -type ip -vlnv xilinx.com:ip:zynq_ultra_ps_e zynq_ultra_ps_e_0]
apply_bd_automation -rule xilinx.com:bd_rule:zynq_ultra_ps_e \
    -config {apply_board_preset "1"} $ps
set_property -dict [list \
    CONFIG.PSU__USE__M_AXI_GP0 {1} \
    CONFIG.PSU__USE__M_AXI_GP1 {0} \
    CONFIG.PSU__USE__M_AXI_GP2 {0} \
    CONFIG.PSU__MAXIGP0__DATA_WIDTH {32} \
    CONFIG.PSU__USE__S_AXI_GP0 {1} \
    CONFIG.PSU__SAXIGP0__DATA_WIDTH {128} \
    CONFIG.PSU__USE__IRQ0 {1} \
    CONFIG.PSU__FPGA_PL0_ENABLE {1} \
    CONFIG.PSU__CRL_APB__PL0_REF_CTRL__FREQMHZ {250} \
] $ps

# 128-bit data matches the HPC port: one beat per clock at 250 MHz is 4 GB/s
set rm [create_bd_cell -type ip -vlnv $vlnv ring_mirror_0]
set_property -dict [list \
    CONFIG.DATA_WIDTH {128} \
    CONFIG.ADDR_WIDTH {49} \
    CONFIG.MAX_BURST_LEN {16} \
    CONFIG.MAX_OUTSTANDING {8} \
    CONFIG.FIFO_DEPTH {128} \
    CONFIG.AXI_CACHE {"1111"} \
    CONFIG.AXI_PROT {"010"} \
] $rm

set rst [create_bd_cell -type ip -vlnv xilinx.com:ip:proc_sys_reset proc_sys_reset_0]
set clk [get_bd_pins $ps/pl_clk0]
connect_bd_net $clk [get_bd_pins $ps/maxihpm0_fpd_aclk] [get_bd_pins $ps/saxihpc0_fpd_aclk] \
    [get_bd_pins $rm/aclk] [get_bd_pins $rst/slowest_sync_clk]
connect_bd_net [get_bd_pins $ps/pl_resetn0] [get_bd_pins $rst/ext_reset_in]
connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins $rm/aresetn]

# registers: HPM0 -> SmartConnect -> s_axil (AXI4 to AXI4-Lite conversion in the interconnect)
set sc_ctl [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect smartconnect_ctl]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $sc_ctl
connect_bd_intf_net [get_bd_intf_pins $ps/M_AXI_HPM0_FPD] [get_bd_intf_pins $sc_ctl/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $sc_ctl/M00_AXI] [get_bd_intf_pins $rm/s_axil]
connect_bd_net $clk [get_bd_pins $sc_ctl/aclk]
connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins $sc_ctl/aresetn]

# data: m_axi -> SmartConnect -> S_AXI_HPC0_FPD (coherent with the APU caches)
set sc_dat [create_bd_cell -type ip -vlnv xilinx.com:ip:smartconnect smartconnect_dat]
set_property -dict [list CONFIG.NUM_SI {1} CONFIG.NUM_MI {1}] $sc_dat
connect_bd_intf_net [get_bd_intf_pins $rm/m_axi] [get_bd_intf_pins $sc_dat/S00_AXI]
connect_bd_intf_net [get_bd_intf_pins $sc_dat/M00_AXI] [get_bd_intf_pins $ps/S_AXI_HPC0_FPD]
connect_bd_net $clk [get_bd_pins $sc_dat/aclk]
connect_bd_net [get_bd_pins $rst/peripheral_aresetn] [get_bd_pins $sc_dat/aresetn]

connect_bd_net [get_bd_pins $rm/irq] [get_bd_pins $ps/pl_ps_irq0]

assign_bd_address -target_address_space /zynq_ultra_ps_e_0/Data \
    [get_bd_addr_segs ring_mirror_0/s_axil/reg0] -offset 0xA0000000 -range 4K
assign_bd_address -target_address_space /ring_mirror_0/m_axi \
    [get_bd_addr_segs zynq_ultra_ps_e_0/SAXIGP0/HPC0_DDR_LOW]
assign_bd_address -target_address_space /ring_mirror_0/m_axi \
    [get_bd_addr_segs zynq_ultra_ps_e_0/SAXIGP0/HPC0_DDR_HIGH]

validate_bd_design
save_bd_design
