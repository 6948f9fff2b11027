#!/bin/sh
# Synthesis check of the ring-mirror IP with Yosys for an UltraScale+ fabric (KV260).
# Usage: hw/synth_yosys.sh [DATA_WIDTH]   (OUT_DIR defaults to the current directory)
# Writes $OUT_DIR/ring_mirror_<W>.stat (resource report) and .log; docs/hw.md quotes it.
# -family xcup selects the UltraScale+ LUTRAM (RAM64M8, RAM32M16) and MUXF9 mappings, but
# Yosys 0.23 has only a CARRY4 carry mapping (xilinx/arith_map.v), so carry chains come
# out as 7-series CARRY4 cells; Vivado would use CARRY8 (8 bits per cell) on this part.
set -eu
W=${1:-64}
HW=$(cd "$(dirname "$0")" && pwd)
OUT=${OUT_DIR:-.}
RTL="$HW/rtl"
yosys -q -l "$OUT/ring_mirror_$W.log" -p "
read_verilog -I$RTL -DSYNTHESIS $RTL/rm_crc32c.v $RTL/rm_crc_table.v $RTL/rm_fifo.v $RTL/rm_burst_plan.v $RTL/rm_mover.v $RTL/rm_restore.v $RTL/ring_mirror_core.v $RTL/ring_mirror_regs.v $RTL/ring_mirror.v
chparam -set DATA_WIDTH $W -set ADDR_WIDTH 40 ring_mirror
synth_xilinx -top ring_mirror -flatten -family xcup
tee -o $OUT/ring_mirror_$W.stat stat
"
cat "$OUT/ring_mirror_$W.stat"
