"""npusim.products: lookup by product id / SoC name / short name, and facts vs HARDWARE.md section 0."""
import pytest

import npusim
from npusim import products
from npusim.products import PRODUCTS, SOCS, get_product

PRODUCT_IDS = ["atlas-training", "atlas-a2", "atlas-a3", "atlas-inference", "atlas-200i-500-a2",
               "ascend-950pr", "ascend-950dt"]


def test_every_seed_product_is_registered():
    assert sorted(PRODUCTS) == sorted(PRODUCT_IDS)


@pytest.mark.parametrize("pid", PRODUCT_IDS)
def test_product_id_gives_its_default_soc(pid):
    soc = get_product(pid)
    assert soc.soc == PRODUCTS[pid].default_soc
    assert soc.product == pid
    assert soc in products.socs_of(pid)
    assert soc.family == PRODUCTS[pid].family


@pytest.mark.parametrize("name,soc", [
    ("atlas-a2", "Ascend910B2"), ("ATLAS-A2", "Ascend910B2"), (" Atlas-A2 ", "Ascend910B2"),
    ("Ascend910B4", "Ascend910B4"), ("ascend910b4", "Ascend910B4"), ("910b4", "Ascend910B4"),
    ("910B4", "Ascend910B4"), ("Ascend910_9391", "Ascend910_9391"), ("910_9372", "Ascend910_9372"),
    ("Ascend310P3", "Ascend310P3"), ("310p1", "Ascend310P1"), ("Ascend 310B1", "Ascend310B1"),
    ("Ascend950PR_9599", "Ascend950PR_9599"), ("950dt_9591", "Ascend950DT_9591"),
    ("910b", "Ascend910B2"),          # users who say "910B" mean Atlas A2 (see products.py docstring)
    ("310p", "Ascend310P3"), ("950pr", "Ascend950PR_9589"),
])
def test_lookup_names(name, soc):
    assert get_product(name).soc == soc
    assert npusim.get_product(name) is get_product(name)


def test_soc_passes_through():
    s = get_product("910b4")
    assert get_product(s) is s
    assert str(s) == "Ascend910B4"


def test_unknown_name_lists_valid_names():
    with pytest.raises(ValueError) as exc:
        get_product("Ascend920")
    msg = str(exc.value)
    assert "Ascend920" in msg
    for name in PRODUCT_IDS + ["Ascend910B4", "Ascend310P3", "Ascend950DT_9581"]:
        assert name in msg
    with pytest.raises(TypeError):
        get_product(910)


def test_every_soc_row_is_consistent():
    fam = {"a2a3": {"dav-c220"}, "310p910": {"dav-c100", "dav-m200"}, "310b": {"dav-m300"}, "950": {"arch35"}}
    for s in SOCS.values():
        assert s.product in PRODUCTS
        assert s.arch_family in fam[s.family]
        if s.core_layout == "split":
            assert s.aiv == 2 * s.aic                     # AIC:AIV = 1:2
        else:
            assert s.core_layout == "coupled" and s.aiv == s.aic
        assert s.ub_bytes > 0 and s.l1_bytes > 0 and s.l0c_bytes > 0 and s.cube_mhz > 0
        assert s.source
    for p in PRODUCTS.values():
        assert p.default_soc in SOCS


# HARDWARE.md section 0 (CANN platform INIs), a few rows verbatim
@pytest.mark.parametrize("name,facts", [
    ("Ascend910B1", dict(npu_arch=2201, aic=24, aiv=48, cube_mhz=1850, hbm_bytes=68719476736, l2_bytes=192 << 20,
                         ub_bytes=192 << 10, l1_bytes=512 << 10, l0a_bytes=64 << 10, l0c_bytes=128 << 10,
                         core_layout="split")),
    ("Ascend910B4", dict(aic=20, aiv=40, cube_mhz=1500, hbm_bytes=34359738368, l2_bytes=96 << 20)),
    ("Ascend910A", dict(npu_arch=1001, aic=32, cube_mhz=1000, l2_bytes=32 << 20, ub_bytes=256 << 10,
                        l1_bytes=1 << 20, l0c_bytes=256 << 10, core_layout="coupled")),
    ("Ascend310P3", dict(npu_arch=2002, aic=8, vector_cores=7, cube_mhz=1060, vec_mhz=1000, l2_bytes=16 << 20,
                         ddr_rate=17, ddr_rate_vec=9, l2_rate=114)),
    ("Ascend310B1", dict(npu_arch=3002, aic=1, cube_mhz=1224, ub_bytes=253952, l2_bytes=4 << 20, l2_rate=256)),
    ("Ascend950PR_9589", dict(npu_arch=3510, aic=32, aiv=64, cube_mhz=1650, hbm_bytes=137438953472,
                              l2_bytes=128 << 20, ub_bytes=253952, l0c_bytes=256 << 10, ddr_rate=31,
                              ddr_rate_vec=16, arch_family="arch35")),
    ("Ascend950DT_9591", dict(aic=36, aiv=72, cube_mhz=1800, hbm_bytes=154618822656, ddr_rate=80)),
    ("Ascend910_9362", dict(aic=20, cube_mhz=1500, l2_bytes=168 << 20)),
])
def test_facts_match_hardware_md(name, facts):
    s = get_product(name)
    for k, v in facts.items():
        assert getattr(s, k) == v, k


def test_cube_fractal():
    assert get_product("atlas-a2").cube_fractal("float16") == (16, 16, 16)
    assert get_product("atlas-a2").cube_fractal("int8") == (16, 32, 16)
    assert get_product("ascend-950pr").cube_fractal("float8_e4m3fn") == (16, 32, 16)
    with pytest.raises(ValueError, match="no fractal"):
        get_product("atlas-a2").cube_fractal("float8_e4m3fn")


def test_vector_clock():
    assert get_product("310p3").vector_mhz == 1000
    assert get_product("910b2").vector_mhz == 1800          # vector at the cube clock on split parts
