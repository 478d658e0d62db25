"""tegrastats parsing, summaries and background sampling, checked against lines recorded on real Jetsons.

Every line below is copied verbatim from a public source (cited above it) and spans the formats tegrastats
has printed: JetPack 3.x/4.x (no timestamp, unit-less "cur/avg" rails), JetPack 5.x (timestamp, "mW" rails,
bracketed GR3D frequencies, -256C sentinels), JetPack 6.x (lower-case sensors, "off" cores, bare
"GR3D_FREQ 0%") and L4T R38/R39 (load-less GR3D, "cur/avg/max" rails, "cur/max" temperatures).
"""

from __future__ import annotations

import ast
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import List, Optional

import pytest

from edgecam.devices import tegrastats as tegrastats_module
from edgecam.devices.tegrastats import (
    TegrastatsSampler,
    TegrastatsUnavailable,
    maybe_sampler,
    parse_line,
    summarise,
)

MODULE_PATH = Path(tegrastats_module.__file__).resolve()

# --- recorded lines ------------------------------------------------------------------------------------

# Jetson TX2, JetPack 3.x era (June 2018; the thread does not name the release). Three consecutive lines,
# comment by Programmerwyl, https://github.com/gustavz/realtime_object_detection/issues/24
TX2_JP3 = [
    "RAM 1685/7854MB (lfb 1044x4MB) SWAP 278/8192MB (cached 23MB) CPU [0%@1303,0%@345,0%@345,0%@1419,0%@1420,0%@1421] EMC_FREQ 0%@1866 GR3D_FREQ 0%@140 APE 150 MTS fg 1% bg 8% BCPU@41C MCPU@41C GPU@39C PLL@41C Tboard@37C Tdiode@37.25C PMIC@100C thermal@39.9C VDD_IN 1931/1931 VDD_CPU 231/231 VDD_GPU 154/154 VDD_SOC 385/385 VDD_WIFI 38/38 VDD_DDR 326/326",
    "RAM 1685/7854MB (lfb 1044x4MB) SWAP 278/8192MB (cached 23MB) CPU [4%@346,0%@344,0%@345,1%@345,0%@345,2%@345] EMC_FREQ 16%@102 GR3D_FREQ 0%@140 APE 150 MTS fg 0% bg 0% BCPU@41C MCPU@41C GPU@39C PLL@41C Tboard@37C Tdiode@37.25C PMIC@100C thermal@39.9C VDD_IN 1776/1853 VDD_CPU 231/231 VDD_GPU 154/154 VDD_SOC 386/385 VDD_WIFI 38/38 VDD_DDR 250/288",
    "RAM 1685/7854MB (lfb 1044x4MB) SWAP 278/8192MB (cached 23MB) CPU [4%@345,0%@345,0%@345,2%@345,2%@346,3%@345] EMC_FREQ 16%@102 GR3D_FREQ 0%@140 APE 150 MTS fg 0% bg 0% BCPU@40.5C MCPU@40.5C GPU@39C PLL@40.5C Tboard@37C Tdiode@37.25C PMIC@100C thermal@40.2C VDD_IN 1738/1815 VDD_CPU 231/231 VDD_GPU 154/154 VDD_SOC 386/385 VDD_WIFI 38/38 VDD_DDR 250/275",
]

# Jetson TX2 (8 GB), JetPack 4.2.x era ("the latest tegrastats", Sept 2019), run without sudo so EMC/GR3D
# carry no frequency. https://github.com/FindHao/tx-utils/issues/3
TX2_JP42 = "RAM 2020/7852MB (lfb 1164x4MB) CPU [9%@345,21%@345,25%@345,3%@345,1%@345,1%@345] EMC_FREQ 0% GR3D_FREQ 0% PLL@42.5C MCPU@42.5C PMIC@100C Tboard@40C GPU@41C BCPU@42.5C thermal@41.9C Tdiode@41.25C VDD_SYS_GPU 153/158 VDD_SYS_SOC 536/547 VDD_4V0_WIFI 633/527 VDD_IN 3140/3208 VDD_SYS_CPU 536/590 VDD_SYS_DDR 557/601"

# Jetson AGX Xavier (16 GB), JetPack 4.2 thread: rails printed with bare names ("GPU 463/463") next to
# sensors of the same name ("GPU@30.5C"). Comment by alexis-gruet-deel, 2019-06-17,
# https://github.com/martinkersner/gtop/pull/7
AGX_XAVIER_JP42 = "RAM 14700/15692MB (lfb 3x2MB) SWAP 898/8192MB (cached 23MB) CPU [0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190,0%@1190] EMC_FREQ 0% GR3D_FREQ 0% AO@30C GPU@30.5C Tboard@31C Tdiode@32C AUX@30.5C CPU@31.5C thermal@30.8C PMIC@100C GPU 463/463 CPU 618/618 SOC 2936/2936 CV 0/0 VDDRQ 309/309 SYS5V 3306/3306"

# The next three: waggle-sensor/jetson-exporter, pkg/tegrastats/tegrastats_test.go (lines recorded on the
# project's Waggle/Sage nodes; the test names give board and JetPack).
# Jetson Nano (4 GB), JetPack 4.6.1 (TestParseTegraStatsXavierNanoJetPack461): IRAM field, POM_5V_* rails.
NANO_JP461 = "RAM 1923/3964MB (lfb 2x2MB) SWAP 191/1982MB (cached 6MB) IRAM 0/252kB(lfb 252kB) CPU [5%@1224,4%@1224,3%@1224,6%@1224] EMC_FREQ 0%@1600 GR3D_FREQ 0%@76 APE 25 PLL@37C CPU@40C PMIC@50C GPU@40C AO@45C thermal@40C POM_5V_IN 1750/1628 POM_5V_GPU 0/0 POM_5V_CPU 366/406"
# Jetson Xavier NX, JetPack 4.x (TestParseTegraStatsXavierNXJetPack411).
XAVIER_NX_JP4 = "RAM 5246/7771MB (lfb 7x4MB) SWAP 983/20269MB (cached 280MB) CPU [47%@1420,23%@1420,32%@1420,22%@1420,31%@1420,96%@1420] EMC_FREQ 2%@1600 GR3D_FREQ 0%@1109 APE 150 MTS fg 1% bg 9% AO@29C GPU@31.5C PMIC@100C AUX@30C CPU@33.5C thermal@31.35C VDD_IN 6140/5510 VDD_CPU_GPU_CV 2706/2119 VDD_SOC 1074/1051"
# Jetson Xavier NX, JetPack 5.1.2 (TestParseTegraStatsXavierNXJetPack512): timestamp, "mW", GR3D "@[114]".
XAVIER_NX_JP512 = "07-09-2024 13:31:31 RAM 3168/6851MB (lfb 2x4MB) SWAP 161/3426MB (cached 0MB) CPU [23%@1397,17%@1192,16%@1190,13%@1190,23%@1190,10%@1190] EMC_FREQ 2%@204 GR3D_FREQ 0%@[114] VIC_FREQ 115 APE 150 AUX@45C CPU@46.5C thermal@45.6C AO@45C GPU@45.5C PMIC@50C VDD_IN 2763mW/2846mW VDD_CPU_GPU_CV 650mW/670mW VDD_SOC 650mW/711mW"

# Jetson AGX Orin 64 GB dev kit, JetPack 5.1 (the same post installs the jp/v51 PyTorch wheel): GR3D2_FREQ,
# -256C sentinels, rail "NC" printed twice. catid, "AI on Jetson Orin" (2023-04-23),
# catid/blog2022 content/posts/orin_opt.md (https://catid.io/posts/orin_opt/)
AGX_ORIN64_JP51 = "04-24-2023 00:01:24 RAM 1282/62795MB (lfb 15152x4MB) SWAP 0/31398MB (cached 0MB) CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@2133 GR3D_FREQ 0%@0 GR3D2_FREQ 0%@0 VIC_FREQ 729 APE 174 CV0@-256C CPU@42.593C Tboard@32C SOC2@39.343C Tdiode@33.25C SOC0@39.375C CV1@-256C GPU@-256C tj@42.593C SOC1@40.468C CV2@-256C VDD_GPU_SOC 2399mW/2399mW VDD_CPU_CV 400mW/400mW VIN_SYS_5V0 4032mW/4032mW NC 0mW/0mW VDDQ_VDD2_1V8AO 301mW/301mW NC 0mW/0mW"

# Jetson AGX Orin 32 GB dev kit "rudi2" at Georgia Tech CRNCH, recorded twice on the same board:
# gt-crnch-rg/read-the-docs docs/neuromorphic/rudi-jetson-dev-boards.rst
# - Oct 2023 revision, kernel 5.10.65 (L4T R35, JetPack 5.x):
AGX_ORIN32_JP5 = "10-16-2023 10:59:22 RAM 1205/30623MB (lfb 6429x4MB) SWAP 0/15311MB (cached 0MB) CPU [0%@729,0%@729,1%@729,0%@729,0%@729,0%@730,0%@730,0%@729,0%@729,0%@729,0%@729,0%@729] EMC_FREQ 0%@204 GR3D_FREQ 0%@114 GR3D2_FREQ 0%@114 NVJPG1 729 VIC_FREQ 729 APE 233 CV0@-256C CPU@43.5C Tdiode@32.5C SOC2@40.062C SOC0@40.5C CV1@-256C GPU@38.156C SOC1@39.125C CV2@-256C VDD_GPU_SOC 4788mW/4788mW VDD_CPU_CV 798mW/798mW VIN_SYS_5V0 3842mW/3842mW NC 0mW/0mW VDDQ_VDD2_1V8AO 707mW/707mW NC 0mW/0mW"
# - Sept 2025 revision, kernel 5.15.148 + CUDA 12.6 (L4T R36.4, JetPack 6.x): four cores "off", no EMC_FREQ.
AGX_ORIN32_JP6 = "09-01-2025 10:55:25 RAM 1313/30697MB (lfb 37x4MB) SWAP 0/15348MB (cached 0MB) CPU [0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,0%@729,off,off,off,off] GR3D_FREQ 0% cpu@43.343C soc2@39.812C soc0@40.312C tj@43.343C soc1@38.843C VDD_GPU_SOC 1995mW/1995mW VDD_CPU_CV 0mW/0mW VIN_SYS_5V0 2524mW/2524mW"

# The next lines: lesomnus/tegra-exporter stats/parse_test.go, each block recorded under the
# /etc/nv_tegra_release quoted in the test.
# Jetson AGX Orin 64 GB, L4T R36.4.4 (JetPack 6.2.1), three consecutive lines.
AGX_ORIN64_JP621 = [
    "05-09-2026 18:42:06 RAM 18207/62841MB (lfb 466x4MB) SWAP 86/31420MB (cached 0MB) CPU [14%@2188,5%@2112,8%@2035,14%@2201,46%@1267,47%@1267,2%@1267,10%@1267,4%@1036,5%@1036,6%@1036,10%@1036] EMC_FREQ 3%@2133 GR3D_FREQ 0%@[0,0] NVENC 79%@166 NVDEC off NVJPG off NVJPG1 off VIC 36%@115 OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.562C soc2@48.437C soc0@49.093C tj@52.562C soc1@49.656C VDD_GPU_SOC 2412mW/2412mW VDD_CPU_CV 1607mW/1607mW VIN_SYS_5V0 4707mW/4707mW",
    "05-09-2026 18:42:07 RAM 18202/62841MB (lfb 466x4MB) SWAP 86/31420MB (cached 0MB) CPU [16%@1949,6%@1761,4%@1222,4%@2201,4%@1036,33%@1036,0%@1036,40%@1036,3%@1190,46%@1190,6%@1190,2%@1190] EMC_FREQ 3%@2133 GR3D_FREQ 0%@[0,0] NVENC 78%@166 NVDEC off NVJPG off NVJPG1 off VIC 32%@115 OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.343C soc2@48.343C soc0@49.062C tj@52.343C soc1@49.531C VDD_GPU_SOC 2412mW/2412mW VDD_CPU_CV 1607mW/1607mW VIN_SYS_5V0 4607mW/4657mW",
    "05-09-2026 18:42:08 RAM 18203/62841MB (lfb 466x4MB) SWAP 86/31420MB (cached 0MB) CPU [14%@729,5%@1648,4%@1645,3%@2050,3%@1113,0%@1113,0%@1113,70%@1113,4%@1651,32%@1651,3%@1651,15%@1651] EMC_FREQ 2%@2133 GR3D_FREQ 0%@[0,0] NVENC 78%@179 NVDEC off NVJPG off NVJPG1 off VIC 37%@115 OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@52.156C soc2@48.468C soc0@49.218C tj@52.156C soc1@49.625C VDD_GPU_SOC 2412mW/2412mW VDD_CPU_CV 1607mW/1607mW VIN_SYS_5V0 4707mW/4674mW",
]
# Jetson AGX Thor (128 GB, 14 cores), L4T R38.4.0 (JetPack 7.x): "GR3D_FREQ @[0,0,0]" has no load figure.
THOR_R38 = "05-17-2026 10:00:32 RAM 4208/125773MB (lfb 31x4MB) SWAP 0/2048MB (cached 0MB) CPU [1%@972,0%@972,0%@972,0%@972,1%@972,0%@972,1%@972,1%@972,0%@972,0%@972,3%@972,0%@972,0%@972,1%@972] EMC_FREQ 0%@665 GR3D_FREQ @[0,0,0] NVENC0_FREQ @0 NVENC1_FREQ @0 NVDEC0_FREQ @0 NVDEC1_FREQ @0 NVJPG0_FREQ @0 VIC off OFA_FREQ @0 PVA0_FREQ off APE 300 cpu@34.468C tj@34.5C soc012@33.781C soc345@34.5C VDD_GPU 0mW/0mW VDD_CPU_SOC_MSS 4165mW/4165mW VIN_SYS_5V0 4126mW/4126mW"
# L4T R39.2.0 block: temperatures "cur/max", rails "cur/avg/max". First a Thor under load (two lines) ...
THOR_R39 = [
    "07-23-2026 15:29:26 RAM 9101/125811MB (lfb 19x4MB) SWAP 0/2048MB (cached 0MB) CPU [39%@2160,20%@2160,16%@1944,15%@1944,17%@972,15%@972,19%@2214,22%@2214,13%@2430,20%@2430,26%@972,19%@972,15%@1836,22%@1836] EMC_FREQ 7%@3200 GR3D_FREQ @[314,314,314] NVENC0_FREQ @1556 NVENC1_FREQ @1556 NVDEC0_FREQ @1556 NVDEC1_FREQ @1556 NVJPG0_FREQ @1556 VIC 59%@423 OFA_FREQ @1556 PVA0_FREQ off APE 300 cpu@34.843C/34.843C tj@35.906C/35.906C soc012@34.437C/34.437C gpu@35.906C/35.906C soc345@34.406C/34.406C VDD_GPU 4925mW/4925mW/4925mW VDD_CPU_SOC_MSS 8710mW/8710mW/8710mW VIN_SYS_5V0 6767mW/6767mW/6767mW",
    "07-23-2026 15:29:27 RAM 9091/125811MB (lfb 19x4MB) SWAP 0/2048MB (cached 0MB) CPU [40%@972,16%@972,18%@972,20%@972,13%@972,11%@972,15%@972,19%@972,10%@972,15%@972,28%@972,11%@972,11%@972,15%@972] EMC_FREQ 7%@3200 GR3D_FREQ @[314,314,314] NVENC0_FREQ @1556 NVENC1_FREQ @1556 NVDEC0_FREQ @1556 NVDEC1_FREQ @1556 NVJPG0_FREQ @1556 VIC 59%@423 OFA_FREQ @1556 PVA0_FREQ off APE 300 cpu@34.312C/34.843C tj@35.906C/35.906C soc012@34.093C/34.437C gpu@35.906C/35.906C soc345@34.437C/34.437C VDD_GPU 4925mW/4925mW/4925mW VDD_CPU_SOC_MSS 7953mW/8332mW/8710mW VIN_SYS_5V0 6667mW/6717mW/6767mW",
]
# ... then a 12-core, 64 GB board with NVDLA engines (an AGX Orin) with four cores "off".
ORIN_R39_OFF_CORES = "07-31-2026 14:58:05 RAM 4714/62878MB (lfb 7x4MB) SWAP 0/2048MB (cached 0MB) CPU [78%@1728,33%@1728,46%@1728,55%@1728,49%@729,48%@729,37%@729,57%@729,off,off,off,off] EMC_FREQ 2%@2133 GR3D_FREQ 0%@[0,0] NVENC0 off NVDEC0 off NVJPG0 off NVJPG1 off VIC off OFA off NVDLA0 off NVDLA1 off PVA0_FREQ off APE 174 cpu@50.718C/50.718C soc2@47.656C/47.656C soc0@47.156C/47.156C tj@50.718C/50.718C soc1@49C/49C VDD_GPU_SOC 2265mW/2265mW/2265mW VDD_CPU_CV 2643mW/2643mW/2643mW VIN_SYS_5V0 4722mW/4722mW/4722mW"

# Jetson Orin Nano 8 GB dev kit (7620 MB), JetPack 6 format with a VDD_IN input rail. henrygd/beszel
# agent/gpu_test.go, TestParseJetsonData cases "more valid data" (GPU at 63%; recorded while
# https://github.com/henrygd/beszel/issues/286 — an Orin Nano on kernel 5.15.148-tegra — was worked on) and
# "orin nano" (no EMC_FREQ field).
ORIN_NANO_JP6_LOADED = "11-15-2024 08:38:09 RAM 6185/7620MB (lfb 8x2MB) SWAP 851/3810MB (cached 1MB) CPU [15%@729,11%@729,14%@729,13%@729,11%@729,8%@729] EMC_FREQ 43%@2133 GR3D_FREQ 63%@[621] NVDEC off NVJPG off NVJPG1 off VIC off OFA off APE 200 cpu@53.968C soc2@52.437C soc0@50.75C gpu@53.343C tj@53.968C soc1@51.656C VDD_IN 12479mW/12479mW VDD_CPU_GPU_CV 4667mW/4667mW VDD_SOC 2817mW/2817mW"
ORIN_NANO_JP6_IDLE = "06-18-2025 11:25:24 RAM 3452/7620MB (lfb 25x4MB) SWAP 1518/16384MB (cached 174MB) CPU [1%@1420,2%@1420,0%@1420,2%@1420,2%@729,1%@729] GR3D_FREQ 0% cpu@50.031C soc2@49.031C soc0@50C gpu@49.031C tj@50.25C soc1@50.25C VDD_IN 4824mW/4824mW VDD_CPU_GPU_CV 518mW/518mW VDD_SOC 1475mW/1475mW"

ALL_LINES = (
    TX2_JP3
    + [TX2_JP42, AGX_XAVIER_JP42, NANO_JP461, XAVIER_NX_JP4, XAVIER_NX_JP512, AGX_ORIN64_JP51]
    + [AGX_ORIN32_JP5, AGX_ORIN32_JP6]
    + AGX_ORIN64_JP621
    + [THOR_R38]
    + THOR_R39
    + [ORIN_R39_OFF_CORES, ORIN_NANO_JP6_LOADED, ORIN_NANO_JP6_IDLE]
)


# --- parse_line: JetPack 3.x / 4.x ---------------------------------------------------------------------


def test_tx2_jetpack3_line() -> None:
    s = parse_line(TX2_JP3[0])
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (1685, 7854, 278, 8192)
    assert s.cpu_load_pct == [0, 0, 0, 0, 0, 0]
    assert s.cpu_freq_mhz == [1303, 345, 345, 1419, 1420, 1421]
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0, 140)
    assert (s.emc_load_pct, s.emc_freq_mhz) == (0, 1866)
    assert s.temps_c == {"BCPU": 41.0, "MCPU": 41.0, "GPU": 39.0, "PLL": 41.0, "Tboard": 37.0, "Tdiode": 37.25, "PMIC": 100.0, "thermal": 39.9}
    assert s.power_mw == {"VDD_IN": 1931, "VDD_CPU": 231, "VDD_GPU": 154, "VDD_SOC": 385, "VDD_WIFI": 38, "VDD_DDR": 326}
    assert s.timestamp is None
    later = parse_line(TX2_JP3[1])
    assert later.cpu_load_pct == [4, 0, 0, 1, 0, 2] and later.emc_load_pct == 16 and later.emc_freq_mhz == 102
    assert later.power_mw["VDD_IN"] == 1776 and later.power_avg_mw["VDD_IN"] == 1853


def test_tx2_jetpack42_without_frequencies() -> None:
    s = parse_line(TX2_JP42)
    assert (s.ram_used_mb, s.ram_total_mb) == (2020, 7852)
    assert s.swap_used_mb is None and s.swap_total_mb is None  # no SWAP field on this board
    assert s.cpu_load_pct == [9, 21, 25, 3, 1, 1] and s.cpu_freq_mhz == [345] * 6
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0, None)  # "GR3D_FREQ 0%" (tegrastats run without sudo)
    assert (s.emc_load_pct, s.emc_freq_mhz) == (0, None)
    assert s.temps_c["thermal"] == 41.9 and s.temps_c["Tdiode"] == 41.25 and s.temps_c["BCPU"] == 42.5
    assert s.power_mw["VDD_IN"] == 3140 and s.power_avg_mw["VDD_IN"] == 3208
    assert s.power_mw["VDD_SYS_GPU"] == 153 and s.power_mw["VDD_4V0_WIFI"] == 633 and s.power_avg_mw["VDD_4V0_WIFI"] == 527
    assert len(s.power_mw) == 6


def test_agx_xavier_jetpack42_bare_rail_names() -> None:
    s = parse_line(AGX_XAVIER_JP42)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (14700, 15692, 898)
    assert s.cpu_load_pct == [0] * 8 and s.cpu_freq_mhz == [1190] * 8
    # "GPU@30.5C" is a sensor, "GPU 463/463" a rail: both are read, neither shadows the other.
    assert s.temps_c["GPU"] == 30.5 and s.temps_c["CPU"] == 31.5 and s.temps_c["thermal"] == 30.8
    assert s.power_mw == {"GPU": 463, "CPU": 618, "SOC": 2936, "CV": 0, "VDDRQ": 309, "SYS5V": 3306}
    assert s.gpu_load_pct == 0 and s.gpu_freq_mhz is None


def test_nano_jetpack461_pom_rails() -> None:
    s = parse_line(NANO_JP461)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (1923, 3964, 191, 1982)  # not IRAM's kB
    assert s.cpu_load_pct == [5, 4, 3, 6] and s.cpu_freq_mhz == [1224] * 4
    assert (s.gpu_load_pct, s.gpu_freq_mhz, s.emc_load_pct, s.emc_freq_mhz) == (0, 76, 0, 1600)
    assert s.power_mw == {"POM_5V_IN": 1750, "POM_5V_GPU": 0, "POM_5V_CPU": 366}
    assert s.power_avg_mw == {"POM_5V_IN": 1628, "POM_5V_GPU": 0, "POM_5V_CPU": 406}
    assert s.temps_c == {"PLL": 37.0, "CPU": 40.0, "PMIC": 50.0, "GPU": 40.0, "AO": 45.0, "thermal": 40.0}


def test_xavier_nx_jetpack4() -> None:
    s = parse_line(XAVIER_NX_JP4)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (5246, 7771, 983, 20269)
    assert s.cpu_load_pct == [47, 23, 32, 22, 31, 96] and s.cpu_freq_mhz == [1420] * 6
    assert (s.gpu_load_pct, s.gpu_freq_mhz, s.emc_load_pct, s.emc_freq_mhz) == (0, 1109, 2, 1600)
    assert s.power_mw == {"VDD_IN": 6140, "VDD_CPU_GPU_CV": 2706, "VDD_SOC": 1074}
    assert s.power_avg_mw["VDD_CPU_GPU_CV"] == 2119
    assert s.temps_c["thermal"] == 31.35 and s.temps_c["AUX"] == 30.0


# --- parse_line: JetPack 5.x ---------------------------------------------------------------------------


def test_xavier_nx_jetpack512_timestamp_and_mw_units() -> None:
    s = parse_line(XAVIER_NX_JP512)
    assert s.timestamp == "07-09-2024 13:31:31"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (3168, 6851, 161)
    assert s.cpu_load_pct == [23, 17, 16, 13, 23, 10]
    assert s.cpu_freq_mhz == [1397, 1192, 1190, 1190, 1190, 1190]
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0, 114)  # "GR3D_FREQ 0%@[114]"
    assert (s.emc_load_pct, s.emc_freq_mhz) == (2, 204)
    assert s.power_mw == {"VDD_IN": 2763, "VDD_CPU_GPU_CV": 650, "VDD_SOC": 650}
    assert s.power_avg_mw == {"VDD_IN": 2846, "VDD_CPU_GPU_CV": 670, "VDD_SOC": 711}
    assert s.temps_c["CPU"] == 46.5 and s.temps_c["GPU"] == 45.5 and s.temps_c["PMIC"] == 50.0


def test_agx_orin64_jetpack51_drops_minus_256_sentinels() -> None:
    s = parse_line(AGX_ORIN64_JP51)
    assert s.timestamp == "04-24-2023 00:01:24"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (1282, 62795, 0, 31398)
    assert s.cpu_load_pct == [0] * 12 and s.cpu_freq_mhz == [729] * 12
    assert (s.gpu_load_pct, s.gpu_freq_mhz, s.emc_load_pct, s.emc_freq_mhz) == (0, 0, 0, 2133)
    # CV0/CV1/CV2/GPU print -256C (powered down): not temperatures, so not reported.
    assert s.temps_c == {"CPU": 42.593, "Tboard": 32.0, "SOC2": 39.343, "Tdiode": 33.25, "SOC0": 39.375, "tj": 42.593, "SOC1": 40.468}
    assert s.power_mw == {"VDD_GPU_SOC": 2399, "VDD_CPU_CV": 400, "VIN_SYS_5V0": 4032, "NC": 0, "VDDQ_VDD2_1V8AO": 301}


def test_agx_orin32_jetpack5_gpu_temperature_and_second_gpc() -> None:
    s = parse_line(AGX_ORIN32_JP5)
    assert (s.ram_used_mb, s.ram_total_mb) == (1205, 30623)
    assert s.cpu_load_pct == [0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0]
    assert s.cpu_freq_mhz == [729, 729, 729, 729, 729, 730, 730, 729, 729, 729, 729, 729]
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0, 114)  # GR3D_FREQ; GR3D2_FREQ (second GPC) is not mixed in
    assert (s.emc_load_pct, s.emc_freq_mhz) == (0, 204)
    assert s.temps_c["GPU"] == 38.156 and "CV0" not in s.temps_c and s.temps_c["SOC2"] == 40.062
    assert s.power_mw["VDD_GPU_SOC"] == 4788 and s.power_mw["VDDQ_VDD2_1V8AO"] == 707 and s.power_mw["VIN_SYS_5V0"] == 3842


# --- parse_line: JetPack 6.x ---------------------------------------------------------------------------


def test_agx_orin32_jetpack6_off_cores_and_bare_gr3d() -> None:
    s = parse_line(AGX_ORIN32_JP6)
    assert s.timestamp == "09-01-2025 10:55:25"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (1313, 30697, 0, 15348)
    assert s.cpu_load_pct == [0] * 8 + [None] * 4
    assert s.cpu_freq_mhz == [729] * 8 + [None] * 4
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0, None)  # "GR3D_FREQ 0%"
    assert (s.emc_load_pct, s.emc_freq_mhz) == (None, None)  # no EMC_FREQ on this line
    assert s.temps_c == {"cpu": 43.343, "soc2": 39.812, "soc0": 40.312, "tj": 43.343, "soc1": 38.843}
    assert s.power_mw == {"VDD_GPU_SOC": 1995, "VDD_CPU_CV": 0, "VIN_SYS_5V0": 2524}


def test_agx_orin64_jetpack621_engines_do_not_leak_into_gpu() -> None:
    s = parse_line(AGX_ORIN64_JP621[0])
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb) == (18207, 62841, 86)
    assert s.cpu_load_pct == [14, 5, 8, 14, 46, 47, 2, 10, 4, 5, 6, 10]
    assert s.cpu_freq_mhz == [2188, 2112, 2035, 2201, 1267, 1267, 1267, 1267, 1036, 1036, 1036, 1036]
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (0, 0)  # NVENC 79%@166 and VIC 36%@115 are other engines
    assert (s.emc_load_pct, s.emc_freq_mhz) == (3, 2133)
    assert s.temps_c == {"cpu": 52.562, "soc2": 48.437, "soc0": 49.093, "tj": 52.562, "soc1": 49.656}
    assert s.power_mw == {"VDD_GPU_SOC": 2412, "VDD_CPU_CV": 1607, "VIN_SYS_5V0": 4707}


def test_orin_nano_jetpack6_vdd_in_and_gpu_load() -> None:
    s = parse_line(ORIN_NANO_JP6_LOADED)
    assert s.timestamp == "11-15-2024 08:38:09"
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_used_mb, s.swap_total_mb) == (6185, 7620, 851, 3810)
    assert (s.gpu_load_pct, s.gpu_freq_mhz, s.emc_load_pct, s.emc_freq_mhz) == (63, 621, 43, 2133)
    assert s.cpu_load_pct == [15, 11, 14, 13, 11, 8] and s.cpu_freq_mhz == [729] * 6
    assert s.power_mw == {"VDD_IN": 12479, "VDD_CPU_GPU_CV": 4667, "VDD_SOC": 2817}
    assert s.temps_c["gpu"] == 53.343 and s.temps_c["tj"] == 53.968

    idle = parse_line(ORIN_NANO_JP6_IDLE)
    assert (idle.ram_used_mb, idle.swap_used_mb, idle.swap_total_mb) == (3452, 1518, 16384)
    assert idle.cpu_freq_mhz == [1420, 1420, 1420, 1420, 729, 729]
    assert (idle.gpu_load_pct, idle.gpu_freq_mhz, idle.emc_load_pct) == (0, None, None)
    assert idle.power_mw == {"VDD_IN": 4824, "VDD_CPU_GPU_CV": 518, "VDD_SOC": 1475}
    assert idle.temps_c["soc0"] == 50.0


# --- parse_line: L4T R38 / R39 -------------------------------------------------------------------------


def test_thor_r38_gpu_without_load() -> None:
    s = parse_line(THOR_R38)
    assert (s.ram_used_mb, s.ram_total_mb, s.swap_total_mb) == (4208, 125773, 2048)
    assert s.cpu_load_pct == [1, 0, 0, 0, 1, 0, 1, 1, 0, 0, 3, 0, 0, 1] and s.cpu_freq_mhz == [972] * 14
    assert (s.gpu_load_pct, s.gpu_freq_mhz) == (None, 0)  # "GR3D_FREQ @[0,0,0]": no load printed
    assert (s.emc_load_pct, s.emc_freq_mhz) == (0, 665)
    assert s.temps_c == {"cpu": 34.468, "tj": 34.5, "soc012": 33.781, "soc345": 34.5}
    assert s.power_mw == {"VDD_GPU": 0, "VDD_CPU_SOC_MSS": 4165, "VIN_SYS_5V0": 4126}


def test_r39_three_reading_rails_and_current_max_temperatures() -> None:
    first, second = (parse_line(line) for line in THOR_R39)
    assert (first.gpu_load_pct, first.gpu_freq_mhz) == (None, 314)
    assert (first.emc_load_pct, first.emc_freq_mhz) == (7, 3200)
    assert first.temps_c["gpu"] == 35.906 and first.temps_c["cpu"] == 34.843
    assert first.power_mw == {"VDD_GPU": 4925, "VDD_CPU_SOC_MSS": 8710, "VIN_SYS_5V0": 6767}
    # "cpu@34.312C/34.843C" and "7953mW/8332mW/8710mW": the first reading is the current one.
    assert second.temps_c["cpu"] == 34.312 and second.temps_c["soc012"] == 34.093
    assert second.power_mw["VDD_CPU_SOC_MSS"] == 7953 and second.power_avg_mw["VDD_CPU_SOC_MSS"] == 8332
    assert second.power_mw["VIN_SYS_5V0"] == 6667 and second.power_avg_mw["VIN_SYS_5V0"] == 6717
    assert second.ram_used_mb == 9091 and second.cpu_freq_mhz == [972] * 14


def test_r39_orin_off_cores() -> None:
    s = parse_line(ORIN_R39_OFF_CORES)
    assert (s.ram_used_mb, s.ram_total_mb) == (4714, 62878)
    assert s.cpu_load_pct == [78, 33, 46, 55, 49, 48, 37, 57, None, None, None, None]
    assert s.cpu_freq_mhz == [1728] * 4 + [729] * 4 + [None] * 4
    assert s.temps_c["soc1"] == 49.0 and s.temps_c["tj"] == 50.718
    assert s.power_mw == {"VDD_GPU_SOC": 2265, "VDD_CPU_CV": 2643, "VIN_SYS_5V0": 4722}


# --- parse_line: robustness ----------------------------------------------------------------------------


@pytest.mark.parametrize("line", ALL_LINES)
def test_every_recorded_line_parses_consistently(line: str) -> None:
    s = parse_line(line)
    assert 0 < s.ram_used_mb < s.ram_total_mb
    assert len(s.cpu_load_pct) == len(s.cpu_freq_mhz) >= 4
    assert all((load is None) == (freq is None) for load, freq in zip(s.cpu_load_pct, s.cpu_freq_mhz))
    assert s.power_mw and set(s.power_mw) == set(s.power_avg_mw)
    assert s.temps_c and all(-50.0 < c < 150.0 for c in s.temps_c.values())
    assert parse_line(line + "\n") == s  # as read from a pipe


def test_unknown_tokens_are_ignored() -> None:
    base = parse_line(AGX_ORIN64_JP621[0])
    noisy = parse_line(AGX_ORIN64_JP621[0] + " FUTURE_ENGINE 12%@900 NEWTHING off DLA2 @[3]")
    assert noisy == base


@pytest.mark.parametrize("line", ["", "tegrastats: command not found", "CPU [5%@1224,4%@1224] GR3D_FREQ 0%@76 VDD_IN 1750/1628"])
def test_line_without_ram_raises_value_error_naming_it(line: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_line(line)
    assert repr(line) in str(info.value)


def test_sample_is_frozen() -> None:
    s = parse_line(NANO_JP461)
    with pytest.raises(AttributeError):
        s.ram_used_mb = 0  # type: ignore[misc]


# --- summarise -----------------------------------------------------------------------------------------


def test_summarise_tx2_run_matches_tegrastats_running_average() -> None:
    samples = [parse_line(line) for line in TX2_JP3]
    summary = summarise(samples)
    assert summary["n"] == 3
    assert summary["ram_used_mb"] == {"max": 1685, "mean": 1685.0}
    assert summary["gpu_load_pct"] == {"mean": 0.0, "max": 0}
    power = summary["power_mean_mw"]
    assert power["VDD_IN"] == pytest.approx((1931 + 1776 + 1738) / 3)  # 1815.0
    assert power["VDD_IN"] == samples[-1].power_avg_mw["VDD_IN"]  # tegrastats' own average since start: 1815
    assert power["VDD_DDR"] == pytest.approx((326 + 250 + 250) / 3)
    assert power["VDD_SOC"] == pytest.approx((385 + 386 + 386) / 3)
    assert power["VDD_CPU"] == 231.0 and power["VDD_WIFI"] == 38.0
    assert summary["temp_max_c"]["BCPU"] == 41.0
    assert summary["temp_max_c"]["thermal"] == 40.2
    assert summary["temp_max_c"]["Tdiode"] == 37.25


def test_summarise_orin_jetpack621_run() -> None:
    summary = summarise(parse_line(line) for line in AGX_ORIN64_JP621)
    assert summary["n"] == 3
    assert summary["ram_used_mb"] == {"max": 18207, "mean": pytest.approx((18207 + 18202 + 18203) / 3)}
    assert summary["power_mean_mw"] == {
        "VDD_CPU_CV": 1607.0,
        "VDD_GPU_SOC": 2412.0,
        "VIN_SYS_5V0": pytest.approx((4707 + 4607 + 4707) / 3),  # 4673.67; tegrastats' last average: 4674
    }
    assert summary["temp_max_c"] == {"cpu": 52.562, "soc0": 49.218, "soc1": 49.656, "soc2": 48.468, "tj": 52.562}


def test_summarise_mixed_rails_and_missing_gpu_load() -> None:
    samples = [parse_line(ORIN_NANO_JP6_LOADED), parse_line(ORIN_NANO_JP6_IDLE), parse_line(THOR_R38)]
    summary = summarise(samples)
    assert summary["n"] == 3
    assert summary["ram_used_mb"] == {"max": 6185, "mean": pytest.approx((6185 + 3452 + 4208) / 3)}  # 4615.0
    assert summary["gpu_load_pct"] == {"mean": 31.5, "max": 63}  # Thor's line has no load: not averaged in
    power = summary["power_mean_mw"]
    assert power["VDD_IN"] == pytest.approx((12479 + 4824) / 2)  # only the two lines that carry VDD_IN
    assert power["VDD_SOC"] == pytest.approx((2817 + 1475) / 2)
    assert power["VDD_GPU"] == 0.0 and power["VDD_CPU_SOC_MSS"] == 4165.0
    temps = summary["temp_max_c"]
    assert temps["tj"] == 53.968 and temps["gpu"] == 53.343 and temps["soc0"] == 50.75 and temps["soc012"] == 33.781
    assert json.loads(json.dumps(summary)) == summary  # JSON-friendly


def test_summarise_ignores_sentinel_sensors_and_handles_empty() -> None:
    summary = summarise([parse_line(AGX_ORIN64_JP51), parse_line(AGX_ORIN32_JP5)])
    assert summary["temp_max_c"]["GPU"] == 38.156  # -256C on the 64 GB board, 38.156C on the 32 GB one
    assert "CV0" not in summary["temp_max_c"]
    assert summary["power_mean_mw"]["VDDQ_VDD2_1V8AO"] == pytest.approx((301 + 707) / 2)
    assert summarise([]) == {"n": 0, "ram_used_mb": None, "gpu_load_pct": None, "power_mean_mw": {}, "temp_max_c": {}}


# --- TegrastatsSampler ---------------------------------------------------------------------------------

_STAND_IN = '''#!{python}
"""Stand-in for tegrastats: replays recorded lines every --interval ms until terminated."""
import json, sys, time
args = sys.argv[1:]
with open({argv_file!r}, "w") as f:
    json.dump(args, f)
interval_s = int(args[args.index("--interval") + 1]) / 1000.0
print("tegrastats stand-in starting", flush=True)  # not a sample: must be counted, not fatal
lines = {lines!r}
i = 0
while True:
    print(lines[i % len(lines)], flush=True)
    i += 1
    time.sleep(interval_s)
'''


def _stand_in(tmp_path: Path, lines: List[str]) -> Path:
    script = tmp_path / "tegrastats"
    script.write_text(_STAND_IN.format(python=sys.executable, argv_file=str(tmp_path / "argv.json"), lines=lines))
    script.chmod(0o755)
    return script


def _wait_for_samples(sampler: TegrastatsSampler, count: int, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while len(sampler.samples) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def _process_gone(pid: int) -> bool:
    """No such process, or a zombie (ended; an orphan's reaper may be slow)."""
    try:
        os.kill(pid, 0)
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(") ", 1)[-1][:1] == "Z"
    except (ProcessLookupError, FileNotFoundError):
        return True


@pytest.mark.timeout(60)
def test_sampler_collects_parsed_samples_and_terminates(tmp_path: Path) -> None:
    script = _stand_in(tmp_path, AGX_ORIN64_JP621)
    assert TegrastatsSampler.available(str(script))
    with TegrastatsSampler(interval_ms=20, executable=str(script)) as sampler:
        time.sleep(0.2)
        _wait_for_samples(sampler, 4)
        pid = sampler.pid
        assert pid is not None and not _process_gone(pid)
    assert json.loads((tmp_path / "argv.json").read_text()) == ["--interval", "20"]
    samples = sampler.samples
    assert len(samples) >= 4
    assert samples[:3] == [parse_line(line) for line in AGX_ORIN64_JP621]
    assert samples[3] == parse_line(AGX_ORIN64_JP621[0])  # replay wrapped around
    assert sampler.bad_lines == 1
    assert sampler.returncode == -signal.SIGTERM
    assert _process_gone(pid)
    summary = sampler.summary()
    assert summary["n"] == len(samples) and summary["bad_lines"] == 1 and summary["interval_ms"] == 20
    assert summary["ram_used_mb"]["max"] == 18207
    assert summary["power_mean_mw"]["VDD_GPU_SOC"] == 2412.0


@pytest.mark.timeout(60)
def test_sampler_stops_tegrastats_when_the_block_raises(tmp_path: Path) -> None:
    script = _stand_in(tmp_path, [NANO_JP461])
    sampler = TegrastatsSampler(interval_ms=10, executable=str(script))
    with pytest.raises(RuntimeError, match="benchmark failed"):
        with sampler:
            _wait_for_samples(sampler, 1)
            raise RuntimeError("benchmark failed")
    assert sampler.returncode is not None and sampler.pid is not None and _process_gone(sampler.pid)
    assert sampler.samples and all(s.power_mw["POM_5V_IN"] == 1750 for s in sampler.samples)


def test_missing_executable(tmp_path: Path) -> None:
    missing = str(tmp_path / "no-tegrastats-here")
    assert not TegrastatsSampler.available(missing)
    assert maybe_sampler(executable=missing) is None
    with pytest.raises(TegrastatsUnavailable, match="no-tegrastats-here"):
        with TegrastatsSampler(executable=missing):
            pass  # pragma: no cover
    script = _stand_in(tmp_path, [NANO_JP461])
    found = maybe_sampler(interval_ms=250, executable=str(script))
    assert isinstance(found, TegrastatsSampler) and found.interval_ms == 250 and found.pid is None
    with pytest.raises(ValueError):
        TegrastatsSampler(interval_ms=0)


# --- runs on the device: standard library only, Python 3.8 ---------------------------------------------

_ISOLATED_CHECK = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("tegrastats_isolated", {path!r})
mod = importlib.util.module_from_spec(spec)
sys.modules[spec.name] = mod
spec.loader.exec_module(mod)
samples = [mod.parse_line(line) for line in {lines!r}]
summary = mod.summarise(samples)
stdlib = getattr(sys, "stdlib_module_names", None)
foreign = sorted({{m.split(".")[0] for m in sys.modules}} - set(stdlib or ()) - {{"tegrastats_isolated", "__main__"}}) if stdlib else []
print(json.dumps({{"summary": summary, "foreign": foreign, "heavy": [m for m in ("numpy", "torch") if m in sys.modules]}}))
"""


def _run_isolated(python: str, lines: List[str]) -> dict:
    """Load the module from its file in `python -S -I` (no site-packages, no PYTHONPATH, no cwd)."""
    code = _ISOLATED_CHECK.format(path=str(MODULE_PATH), lines=lines)
    out = subprocess.run([python, "-S", "-I", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_module_needs_only_the_standard_library() -> None:
    result = _run_isolated(sys.executable, ALL_LINES)
    assert result["heavy"] == [] and result["foreign"] == []
    assert result["summary"] == json.loads(json.dumps(summarise(parse_line(line) for line in ALL_LINES)))


def test_source_is_python38_syntax() -> None:
    ast.parse(MODULE_PATH.read_text(), filename=str(MODULE_PATH), feature_version=(3, 8))


def _python38() -> Optional[str]:
    candidates = [shutil.which("python3.8")]
    pyenv_root = os.environ.get("PYENV_ROOT", os.path.expanduser("~/.pyenv"))
    candidates += sorted(glob.glob(os.path.join(pyenv_root, "versions", "3.8*", "bin", "python3.8")))
    for candidate in candidates:
        if not candidate:
            continue
        try:
            probe = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] == (3, 8))"], capture_output=True, text=True, timeout=60)
        except OSError:
            continue
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


def test_module_runs_on_python38() -> None:
    python = _python38()
    if python is None:
        pytest.skip("no working python3.8 interpreter on this machine")
    result = _run_isolated(python, ALL_LINES)
    assert result["heavy"] == []
    assert result["summary"] == json.loads(json.dumps(summarise(parse_line(line) for line in ALL_LINES)))


@pytest.mark.timeout(60)
def test_tegrastats_ends_with_its_agent(tmp_path: Path) -> None:
    """tegrastats runs in the agent's process group (so the host's group kill of a timed-out agent stops it),
    and an agent killed outright by its watchdog (SIGALRM, no cleanup) takes it down: its next line hits the
    closed pipe."""
    script = _stand_in(tmp_path, [NANO_JP461])
    agent = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom edgecam.devices.tegrastats import TegrastatsSampler\n"
         "s = TegrastatsSampler(interval_ms=50, executable=sys.argv[1]).start()\nprint(s.pid, flush=True)\n"
         "__import__('signal').alarm(2)\ntime.sleep(60)\n", str(script)],
        stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert agent.stdout is not None
    pid = int(agent.stdout.readline())
    assert os.getpgid(pid) == agent.pid  # the agent's group, not a session of its own
    assert agent.wait(timeout=30) == -signal.SIGALRM
    deadline = time.monotonic() + 10
    while not _process_gone(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert _process_gone(pid)
