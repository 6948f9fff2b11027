# Build the KV260 bitstream and .hwh for PYNQ: package the IP, create the block design,
# synthesise, implement, and copy <design>.bit / <design>.hwh next to this script in build/.
# Usage (Vivado 2022.2 or later, Kria board files installed):
#   vivado -mode batch -source hw/vivado/build_kv260.tcl
set here [file dirname [file normalize [info script]]]
set build $here/build
set ip_repo $build/ip_repo
file mkdir $build

set argv [list $ip_repo/ring_mirror]
source $here/package_ip.tcl

create_project ring_mirror_kv260 $build/project -part xck26-sfvc784-2LV-c -force
set_property board_part xilinx.com:kv260_som:part0:1.4 [current_project]
set_property ip_repo_paths $ip_repo [current_project]
update_ip_catalog

source $here/bd_kv260.tcl
set bd [get_files ring_mirror_kv260.bd]
make_wrapper -files $bd -top
add_files -norecurse [file rootname $bd]_wrapper.v
set_property top ring_mirror_kv260_wrapper [current_fileset]
generate_target all $bd

launch_runs impl_1 -to_step write_bitstream -jobs 4
wait_on_run impl_1
if {[get_property PROGRESS [get_runs impl_1]] != "100%"} {
    error "implementation failed: see $build/project"
}
set runs $build/project/ring_mirror_kv260.runs/impl_1
file copy -force $runs/ring_mirror_kv260_wrapper.bit $build/ring_mirror_kv260.bit
set hwh [glob $build/project/ring_mirror_kv260.gen/sources_1/bd/ring_mirror_kv260/hw_handoff/*.hwh]
file copy -force $hwh $build/ring_mirror_kv260.hwh
puts "wrote $build/ring_mirror_kv260.bit and .hwh"
