"""CT physics of the phantom: calibration, the z plan, partial volume, blur, noise, quantisation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from femurseg.conventions import LEFT_FEMUR, RIGHT_FEMUR, TISSUES
from femurseg.geometry import Grid
from femurseg.phantom import ct
from femurseg.phantom.fields import BONE_NAMES, BoneField, HipLandmarks


def test_rod_hu_follow_the_two_component_model() -> None:
    cal = ct.Calibration(sigma_ref=1.4, beta_ref=-1002.0)
    expected = np.array(ct.DEFAULT_ROD_WATER) + 1.4 * np.array(ct.DEFAULT_ROD_K2HPO4) - 1002.0
    np.testing.assert_allclose(cal.rod_hu(), expected)
    assert cal.sigma_ct == pytest.approx(1.4 - 0.2174)
    assert cal.beta_ct == pytest.approx(-1002.0 + 999.6)
    # Bone calibration HU = β_CT + σ_CT·ρ is the rod model for a solution whose water part is 999.6 − 0.2174·ρ
    # (the K2HPO4 displaces water): the two forms agree.
    rho = 150.0
    rod = ct.Calibration(rod_k2hpo4=(rho,) * 5, rod_water=(999.6 - 0.2174 * rho,) * 5, sigma_ref=1.4, beta_ref=-1002.0)
    assert rod.rod_hu()[0] == pytest.approx(cal.hu_of_density(rho), abs=1e-9)


def test_default_certificate_is_mindways() -> None:
    assert ct.DEFAULT_ROD_K2HPO4 == (-51.83, -53.40, 58.88, 157.05, 375.83)
    assert ct.DEFAULT_ROD_WATER == (1012.25, 1056.95, 1103.57, 1119.52, 923.20)


def test_sampled_certificates_vary_a_little_and_are_recorded() -> None:
    cals = [ct.sample_calibration(np.random.default_rng(s)) for s in range(30)]
    k = np.array([c.rod_k2hpo4 for c in cals])
    assert np.all(np.abs(k - np.array(ct.DEFAULT_ROD_K2HPO4)) < 0.06 * np.maximum(np.abs(ct.DEFAULT_ROD_K2HPO4), 50))
    assert k.std(axis=0).min() > 0.1  # they do vary
    facts = cals[0].to_dict()
    assert facts["rod_E_k2hpo4_mg_cm3"] == cals[0].rod_k2hpo4[4]
    assert facts["sigma_ct"] == pytest.approx(cals[0].sigma_ref - 0.2174)
    assert ct.sample_calibration(np.random.default_rng(3)) == ct.sample_calibration(np.random.default_rng(3))


def test_scan_sampling_ranges_and_phantom_rate() -> None:
    scans = [ct.sample_scan(np.random.default_rng(s), body_width_mm=380.0, fat_mm=20.0) for s in range(300)]
    sp = np.array([s.spacing_xyz for s in scans])
    assert sp[:, 0].min() >= 0.6 - 1e-9 and sp[:, 0].max() <= 1.0 + 1e-9
    assert sp[:, 0].min() * 512 >= 380.0 + 30.0 - 1e-6  # the body fits the field of view
    assert sp[:, 2].min() >= 0.5 and sp[:, 2].max() <= 3.0
    thick = np.array([s.slice_thickness_mm for s in scans])
    assert np.all(thick >= sp[:, 2] - 1e-9)
    rate = np.mean([s.calibration_phantom for s in scans])
    assert 0.78 < rate < 0.92
    assert all(s.noise_sigma_hu > 0 for s in scans)
    forced = ct.sample_scan(np.random.default_rng(0), body_width_mm=300, fat_mm=10, spacing_xyz=(0.7, 0.7, 1.0),
                            calibration_phantom=False)
    assert forced.spacing_xyz == (0.7, 0.7, 1.0) and not forced.calibration_phantom


@pytest.mark.parametrize("dz,thickness", [(1.0, 1.0), (2.5, 2.5), (0.5, 0.5), (1.0, 1.5), (3.0, 3.0)])
def test_fine_plan_tiles_each_slice(dz: float, thickness: float) -> None:
    grid = Grid(shape_zyx=(7, 4, 4), spacing_zyx=(dz, 1.0, 1.0), origin_xyz=(0.0, 0.0, 10.0))
    plan = ct.fine_z_plan(grid, slice_thickness_mm=thickness)
    assert plan.delta_mm <= 0.5 + 1e-9 and plan.delta_mm <= thickness / 2 + 1e-9
    assert plan.weights.sum() == pytest.approx(1.0)
    z_fine = plan.grid.origin_xyz[2] + plan.delta_mm * np.arange(plan.n_fine)
    for k in range(grid.shape_zyx[0]):
        zk = 10.0 + k * dz
        own = z_fine[k * plan.m + plan.c0 + np.arange(plan.m)]
        # The voxel's own sub-samples are the midpoints of m equal parts of [zk - dz/2, zk + dz/2].
        np.testing.assert_allclose(own, zk - dz / 2 + (np.arange(plan.m) + 0.5) * dz / plan.m, atol=1e-9)
        taps = k * plan.m + plan.c0 + plan.offsets
        assert taps.min() >= 0 and taps.max() < plan.n_fine
        centre = float(np.sum(plan.weights * z_fine[taps]))
        assert centre == pytest.approx(zk, abs=1e-9)
        fwhm_sd = thickness / (2 * math.sqrt(2 * math.log(2)))
        sd = math.sqrt(float(np.sum(plan.weights * (z_fine[taps] - zk) ** 2)))
        assert sd == pytest.approx(fwhm_sd, rel=0.15)


class _SphereSkeleton:
    """A femur-like test object: a ball with a cortex, on a known position; only the API the renderer uses."""

    def __init__(self, centre: tuple[float, float, float], radius: float, cortex: float, trabecular: float = 1.0):
        self.c = np.asarray(centre, float)
        self.r, self.cortex, self.trab = radius, cortex, trabecular
        h = {"right": self.c, "left": self.c + [200.0, 0, 0]}
        self.landmarks = HipLandmarks(
            head_center_xyz=h, head_radius_mm={"right": radius, "left": radius},
            joint_space_mm={"right": 3.0, "left": 3.0}, acetabulum_roof_z=float(self.c[2] + radius),
            lesser_trochanter_z={"right": float(self.c[2] - 50), "left": float(self.c[2] - 50)},
            shaft_point_xyz={"right": self.c + [40.0, 0, -60], "left": self.c + [160.0, 0, -60]},
            shaft_direction_xyz={"right": np.array([0, 0, 1.0]), "left": np.array([0, 0, 1.0])},
            bounds_min_xyz=self.c - radius, bounds_max_xyz=self.c + radius)

    def sample(self, grid: Grid, *, names=BONE_NAMES):
        out = {}
        if "femur_right" not in names:
            return out
        idx = grid.world_to_index(np.array([self.c - self.r - 3, self.c + self.r + 3]))
        lo = np.maximum(np.floor(idx.min(0)).astype(int), 0)
        hi = np.minimum(np.ceil(idx.max(0)).astype(int) + 1, grid.shape_zyx)
        box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))
        zz, yy, xx = np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij")
        p = grid.index_to_world(np.stack([zz, yy, xx], -1))
        sdf = (np.linalg.norm(p - self.c, axis=-1) - self.r).astype(np.float32)
        out["femur_right"] = BoneField(box, sdf, np.full(sdf.shape, self.cortex, np.float32),
                                       np.full(sdf.shape, self.trab, np.float32))
        return out


def _scan(dz: float, thickness: float, sigma: float = 0.0) -> ct.ScanParams:
    return ct.ScanParams(spacing_xyz=(1.0, 1.0, dz), matrix=64, slice_thickness_mm=thickness, psf_fwhm_mm=0.8,
                         noise_sigma_hu=sigma, noise_band_mm=(0.4, 1.5), streak_hu=0.0, recon_circle=False,
                         calibration_phantom=False, calibration=ct.Calibration())


@pytest.mark.parametrize("dz", [1.0, 2.0, 3.0])
def test_partial_volume_keeps_volume_and_labels_what_the_scanner_shows(dz: float) -> None:
    grid = Grid(shape_zyx=(int(64 / dz), 64, 64), spacing_zyx=(dz, 1.0, 1.0), origin_xyz=(-32.0, -32.0, -32.0))
    radius = 20.3
    sk = _SphereSkeleton((0.37, -0.21, 0.5), radius, cortex=2.0)
    dens = ct.BoneDensity(trabecular_vbmd=150.0, cortical_density=1100.0, marrow_hu=-20.0)
    out = ct.render_bones(sk, grid, scan=_scan(dz, dz), density=dens, rng=np.random.default_rng(0))
    vol = 4 / 3 * math.pi * radius**3
    voxel = dz
    assert out.occupancy.sum() * voxel == pytest.approx(vol, rel=0.01)
    # The label takes the voxels the scanner shows at least a quarter full (FEMUR_LABEL_FRACTION): more than the
    # true volume, by less than a millimetre's shell.
    n_label = int((out.labels == RIGHT_FEMUR).sum())
    assert vol * 1.01 < n_label * voxel < 4 / 3 * math.pi * (radius + 1.0) ** 3
    assert not (out.labels == LEFT_FEMUR).any()
    # Voxels whose centre is inside are labelled; those clearly outside are not.
    w = grid.world_coordinates()
    d = np.linalg.norm(w - sk.c, axis=-1) - radius
    assert out.labels[d < 0].all() and not out.labels[d > dz + 0.5].any()
    # Tissue classes go by majority: every femur tissue voxel is labelled, the label's rim is not all tissue.
    femur_tissue = np.isin(out.tissues, [TISSUES["femur_cortical"], TISSUES["femur_trabecular"], TISSUES["marrow"]])
    assert not (femur_tissue & (out.labels == 0)).any()
    assert (out.labels > 0).sum() > femur_tissue.sum()


def test_cortex_and_trabecular_hu_from_calibration() -> None:
    grid = Grid(shape_zyx=(64, 64, 64), spacing_zyx=(0.5, 0.5, 0.5), origin_xyz=(-16.0, -16.0, -16.0))
    sk = _SphereSkeleton((0.0, 0.0, 0.0), 14.0, cortex=5.0)
    cal = ct.Calibration(sigma_ref=1.4, beta_ref=-1000.0)
    scan = ct.ScanParams(**{**_scan(0.5, 0.5).__dict__, "calibration": cal})
    dens = ct.BoneDensity(trabecular_vbmd=150.0, cortical_density=1100.0, marrow_hu=-20.0, texture_amplitude=0.3)
    out = ct.render_bones(sk, grid, scan=scan, density=dens, rng=np.random.default_rng(1))
    hu = out.hu_weighted / np.maximum(out.occupancy, 1e-6)
    w = grid.world_coordinates()
    r = np.linalg.norm(w - sk.c, axis=-1)
    cortical = (r > 14.0 - 3.5) & (r < 14.0 - 1.5)
    assert hu[cortical].mean() == pytest.approx(cal.hu_of_density(1100.0), rel=0.03)
    assert hu[cortical].mean() > 1000
    inner = r < 7.0
    trab = hu[inner]
    assert 100 < trab.mean() < 300
    assert trab.std() > 20  # the texture is there
    assert out.trabecular_vbmd["right"] == pytest.approx(150.0, rel=0.1)


def test_slice_profile_blurs_along_z_only_as_wide_as_the_slice() -> None:
    # A thick slab bone: its edge along z spreads over about one slice thickness.
    grid = Grid(shape_zyx=(40, 8, 8), spacing_zyx=(1.0, 1.0, 1.0), origin_xyz=(-4.0, -4.0, -20.0))

    class Slab(_SphereSkeleton):
        def sample(self, g: Grid, *, names=BONE_NAMES):
            if "femur_right" not in names:
                return {}
            z = g.origin_xyz[2] + g.spacing_zyx[0] * np.arange(g.shape_zyx[0])
            sdf = np.broadcast_to((z - 0.3)[:, None, None], g.shape_zyx).astype(np.float32).copy()
            box = (slice(0, g.shape_zyx[0]), slice(0, g.shape_zyx[1]), slice(0, g.shape_zyx[2]))
            return {"femur_right": BoneField(box, sdf, np.full(sdf.shape, 3.0, np.float32), np.ones_like(sdf))}

    dens = ct.BoneDensity(trabecular_vbmd=150.0, cortical_density=1100.0, marrow_hu=-20.0)
    profiles = {}
    for thick in (1.0, 3.0):
        out = ct.render_bones(Slab((0, 0, 0), 5, 1), grid, scan=_scan(1.0, thick), density=dens,
                              rng=np.random.default_rng(0))
        profiles[thick] = out.occupancy[:, 4, 4]
    z = -20.0 + np.arange(40)
    for thick, prof in profiles.items():
        assert np.all(np.diff(prof) <= 1e-6)  # bone below z = 0.3
        assert np.interp(0.5, prof[::-1], z[::-1]) == pytest.approx(0.3, abs=0.15)
        width = np.interp(0.1, prof[::-1], z[::-1]) - np.interp(0.9, prof[::-1], z[::-1])
        assert 0.6 * thick < width < 1.3 * thick + 0.8


def test_scanner_noise_level_correlation_and_quantisation() -> None:
    grid = Grid(shape_zyx=(24, 96, 96), spacing_zyx=(1.0, 0.7, 0.7))
    scan = ct.ScanParams(**{**_scan(1.0, 1.0, sigma=20.0).__dict__, "spacing_xyz": (0.7, 0.7, 1.0)})
    hu = np.full(grid.shape_zyx, 40.0, np.float32)
    out = ct.apply_scanner(hu, grid, scan, rng=np.random.default_rng(5), chunk=10)
    assert out.dtype == np.int16
    noise = out.astype(float) - 40.0
    assert noise.mean() == pytest.approx(0.0, abs=1.0)
    assert noise.std() == pytest.approx(20.0, rel=0.1)
    # Band-passed (not white): neighbouring pixels are correlated, as reconstructed CT noise is.
    r1 = np.corrcoef(noise[:, :, :-1].ravel(), noise[:, :, 1:].ravel())[0, 1]
    assert r1 > 0.2
    # Chunks join without a seam: slice-to-slice statistics equal within-chunk ones.
    assert np.corrcoef(noise[9].ravel(), noise[10].ravel())[0, 1] == pytest.approx(
        np.corrcoef(noise[4].ravel(), noise[5].ravel())[0, 1], abs=0.08)
    again = ct.apply_scanner(np.full(grid.shape_zyx, 40.0, np.float32), grid, scan, rng=np.random.default_rng(5),
                             chunk=10)
    np.testing.assert_array_equal(out, again)


def test_scanner_clips_and_pads_the_reconstruction_circle() -> None:
    grid = Grid(shape_zyx=(3, 32, 32), spacing_zyx=(1.0, 1.0, 1.0))
    scan = ct.ScanParams(**{**_scan(1.0, 1.0).__dict__, "recon_circle": True})
    hu = np.full(grid.shape_zyx, 5000.0, np.float32)
    hu[:, 16, 16] = -3000.0
    out = ct.apply_scanner(hu, grid, scan, rng=np.random.default_rng(0))
    assert out.max() == ct.HU_MAX and out.min() == ct.HU_MIN
    assert (out[:, 0, 0] == ct.HU_MIN).all() and (out[:, 16, 2] == ct.HU_MAX).all()
    assert ct.outside_circle(grid)[0, 0] and not ct.outside_circle(grid)[16, 16]
