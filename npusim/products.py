"""Product registry: the Ascend products the seeds name, their SoCs and platform facts.

The facts live in npusim/data/socs.csv (CANN platform INI values, cited in the file header).
`get_product(name)` accepts a product id ('atlas-a2'), an SoC name ('Ascend910B4') or a short
SoC name ('910b4'), case-insensitively, and returns an `Soc`. A product id gives its default SoC.

Note: the INI 'Ascend910B' (30 cores @ 900 MHz, NpuArch 1001) is an old 910A-family part, not the
Atlas A2 "910B". It is left out on purpose: users who say "910B" mean Atlas A2, so '910b' is an
alias of atlas-a2.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass, field
from importlib import resources

INI_SOURCE = ("CANN platform INI, hicann/runtime src/platform/platform_config/*.ini @ 681ef7610 "
              "(shared/spec/HARDWARE.md section 0)")


@dataclass(frozen=True)
class Product:
    id: str
    name: str                 # the name the vendor documents use
    family: str               # 'a2a3' | '310p910' | '310b' | '950': which kernel variant runs
    default_soc: str
    note: str = ""


PRODUCTS = {
    p.id: p for p in [
        Product("atlas-training", "Atlas training series (Ascend 910 / 910A)", "310p910", "Ascend910A",
                "coupled AI Cores; runs the DAV_1001 kernels that share code with 310P"),
        Product("atlas-a2", "Atlas A2 training series / Atlas 800I A2 / A200I A2 Box (Ascend 910B)", "a2a3",
                "Ascend910B2", "split AIC:AIV = 1:2, DAV_2201"),
        Product("atlas-a3", "Atlas A3 training / inference series (Ascend 910_93, one die of 910C)", "a2a3",
                "Ascend910_9391", "same DAV_2201 kernels as Atlas A2"),
        Product("atlas-inference", "Atlas inference series (Ascend 310P: 300I Pro, 300I Duo, 300V)", "310p910",
                "Ascend310P3", "coupled AI Cores plus standalone Vector Cores, DAV_2002"),
        Product("atlas-200i-500-a2", "Atlas 200I/500 A2 inference products (Ascend 310B)", "310b",
                "Ascend310B1", "one coupled AI Core, DAV_3002"),
        Product("ascend-950pr", "Ascend 950PR", "950", "Ascend950PR_9589", "RegBase arch35, NpuArch 3510"),
        Product("ascend-950dt", "Ascend 950DT", "950", "Ascend950DT_9581", "RegBase arch35, NpuArch 3510"),
    ]
}

# Cube fractal (M, K, N) per input dtype and architecture family: INI [DtypeMKN] sections
# (HARDWARE.md section 0). One fractal is one cube cycle per AI Core.
CUBE_FRACTAL = {
    "default": {"float16": (16, 16, 16), "bfloat16": (16, 16, 16), "int8": (16, 32, 16), "int4": (16, 64, 16)},
    "arch35": {"float16": (16, 16, 16), "bfloat16": (16, 16, 16), "int8": (16, 32, 16), "int4": (16, 64, 16),
               "float8_e4m3fn": (16, 32, 16), "float8_e5m2": (16, 32, 16), "hifloat8": (16, 32, 16),
               "float4_e2m1": (16, 64, 16), "float32": (16, 8, 16)},
}


@dataclass(frozen=True)
class Soc:
    """One SoC's platform facts (units: bytes, MHz, bytes/cycle/core)."""
    soc: str
    product: str
    npu_arch: int
    arch_family: str          # dav-c100, dav-c220, dav-m200, dav-m300, arch35
    core_layout: str          # 'coupled' (cube+vector in one AI Core) or 'split' (AIC and AIV cores)
    aic: int                  # AI Cores (cube cores on split parts)
    aiv: int                  # vector cores usable by a vector kernel (AIV on split parts)
    vector_cores: int         # standalone Vector Cores (310P, 310B)
    cube_mhz: int
    vec_mhz: int
    hbm_bytes: int
    l2_bytes: int
    ub_bytes: int
    l1_bytes: int
    l0a_bytes: int
    l0b_bytes: int
    l0c_bytes: int
    ddr_rate: int
    ddr_rate_vec: int
    l2_rate: int
    ub_to_ddr_rate: int
    source: str = field(default=INI_SOURCE, compare=False)

    @property
    def product_info(self) -> Product:
        return PRODUCTS[self.product]

    @property
    def family(self) -> str:
        """Kernel variant family: 'a2a3', '310p910', '310b' or '950'."""
        return PRODUCTS[self.product].family

    @property
    def tiling_ub_bytes(self) -> int:
        """UB bytes as the vendor's tiling code sees them (PlatformAscendC::GetCoreMemSize(UB)): on the SoCs whose
        short version is Ascend910B (Atlas A2, and A3's Ascend910_93) 256 B fewer than the INI's, reserved for
        the matmul's kfc (LOCAL_RESERV_SIZE; hicann/ascend-transformer-boost
        src/kernels/tbe_adapter/platform/platform_ascendc.cpp, whose SocVersionStrMap maps both to ASCEND910B);
        elsewhere the INI's."""
        return self.ub_bytes - 256 if self.family == "a2a3" else self.ub_bytes

    @property
    def vector_mhz(self) -> int:
        return self.vec_mhz or self.cube_mhz

    def cube_fractal(self, dtype: str) -> tuple[int, int, int]:
        table = CUBE_FRACTAL["arch35" if self.arch_family == "arch35" else "default"]
        if dtype not in table:
            raise ValueError(f"{self.soc}: the cube has no fractal for dtype {dtype!r}; known: {sorted(table)}")
        return table[dtype]

    def __str__(self) -> str:
        return self.soc


def _load() -> dict[str, Soc]:
    text = resources.files("npusim").joinpath("data/socs.csv").read_text()
    rows = csv.DictReader(line for line in text.splitlines() if line and not line.startswith("#"))
    socs = {}
    for r in rows:
        kw = {k: (v if k in ("soc", "product", "arch_family", "core_layout") else int(v)) for k, v in r.items()}
        socs[r["soc"]] = Soc(**kw)
    return socs


SOCS: dict[str, Soc] = _load()


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "").removeprefix("ascend")


_LOOKUP: dict[str, Soc] = {}
for _s in SOCS.values():
    _LOOKUP[_key(_s.soc)] = _s
for _p in PRODUCTS.values():
    _LOOKUP[_p.id] = SOCS[_p.default_soc]
_LOOKUP.setdefault("910b", SOCS[PRODUCTS["atlas-a2"].default_soc])
_LOOKUP.setdefault("910", SOCS[PRODUCTS["atlas-training"].default_soc])
_LOOKUP.setdefault("310p", SOCS[PRODUCTS["atlas-inference"].default_soc])
_LOOKUP.setdefault("310b", SOCS[PRODUCTS["atlas-200i-500-a2"].default_soc])
_LOOKUP.setdefault("950pr", SOCS[PRODUCTS["ascend-950pr"].default_soc])
_LOOKUP.setdefault("950dt", SOCS[PRODUCTS["ascend-950dt"].default_soc])


def valid_names() -> list[str]:
    return list(PRODUCTS) + list(SOCS)


def get_product(name) -> Soc:
    """The Soc for a product id, SoC name or short SoC name (case-insensitive). An Soc passes through."""
    if isinstance(name, Soc):
        return name
    if not isinstance(name, str):
        raise TypeError(f"product must be a product id or SoC name (str), got {type(name).__name__}")
    soc = _LOOKUP.get(_key(name)) or _LOOKUP.get(name.strip().lower())
    if soc is None:
        raise ValueError(f"unknown product {name!r}; valid names: {', '.join(valid_names())}")
    return soc


def socs_of(product_id: str) -> list[Soc]:
    return [s for s in SOCS.values() if s.product == product_id]
