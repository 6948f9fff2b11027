# Package hw/rtl as the Vivado IP pyshm:ip:ring_mirror:1.0 (VLNV from hw/regmap.yaml; a
# test checks that this file and the register map agree).
# Usage: vivado -mode batch -source package_ip.tcl -tclargs <out_dir>
set vlnv "pyshm:ip:ring_mirror:1.0"
lassign [split $vlnv :] vendor library name version
set here [file dirname [file normalize [info script]]]
set rtl [file normalize $here/../rtl]
set out [expr {[llength $argv] > 0 ? [lindex $argv 0] : "$here/build/ip_repo/ring_mirror"}]
file mkdir $out

create_project -in_memory -part xck26-sfvc784-2LV-c
add_files -norecurse [glob $rtl/*.v] $rtl/ring_mirror_regmap.vh
set_property file_type {Verilog Header} [get_files ring_mirror_regmap.vh]
set_property top ring_mirror [current_fileset]
update_compile_order -fileset sources_1

ipx::package_project -root_dir $out -vendor $vendor -library $library -taxonomy /UserIP \
    -import_files -set_current false
ipx::unload_core $out/component.xml
ipx::edit_ip_in_project -upgrade true -name tmp_edit -directory $out/tmp $out/component.xml
set core [ipx::current_core]
set_property name $name $core
set_property version $version $core
set_property display_name "pyshm ring mirror" $core
set_property description "Mirrors a pyshm shared-memory ring into a replica over AXI4" $core

# s_axil_* and m_axi_* are inferred as AXI4-Lite slave / AXI4 master; tie them to aclk
ipx::infer_bus_interfaces xilinx.com:interface:aximm_rtl:1.0 $core
ipx::associate_bus_interfaces -busif s_axil -clock aclk $core
ipx::associate_bus_interfaces -busif m_axi -clock aclk $core
set_property value ACTIVE_LOW [ipx::get_bus_parameters POLARITY \
    -of_objects [ipx::get_bus_interfaces aresetn -of_objects $core]]
# the register window is 256 bytes (ADDR_RANGE in driver/regmap.py)
set_property range 256 [ipx::get_address_blocks -of_objects \
    [ipx::get_memory_maps s_axil -of_objects $core]]
ipx::infer_bus_interface irq xilinx.com:signal:interrupt_rtl:1.0 $core

ipx::create_xgui_files $core
ipx::update_checksums $core
ipx::check_integrity $core
ipx::save_core $core
close_project -delete
puts "packaged $vlnv in $out"
