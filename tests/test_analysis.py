"""cosjax.analysis: linear CKA against its HSIC definition, energy layouts, uint8 image helpers."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cosjax import analysis as an
from cosjax.models.dit import patchify

# float32 tolerance: CKA is a ratio of sums of O(n p q) float32 products of unit-normalised data, so
# its rounding error is a few float32 ulps (~1e-7) times sqrt of the number of summed terms (~1e3
# here); 1e-5 leaves a margin while still catching any real formula or centering mistake (>= 1e-3).
TOL = 1e-5
METHODS = ("features", "gram")


def hsic_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA straight from the HSIC definition, float64, explicit n x n centering matrix."""
    n = x.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    k, l_ = x @ x.T, y @ y.T

    def hsic(a, b):
        return np.trace(a @ h @ b @ h) / (n - 1) ** 2

    return hsic(k, l_) / np.sqrt(hsic(k, k) * hsic(l_, l_))


def pair(seed: int, n: int = 64, p: int = 8, q: int = 5, noise: float = 1.0):
    """x [n, p] and a partly linearly related y [n, q], float32."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, p)) + rng.normal(size=(1, p))
    y = x @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q))
    return x.astype(np.float32), y.astype(np.float32)


def cka(x, y, method="auto") -> float:
    return float(an.linear_cka(jnp.asarray(x), jnp.asarray(y), method))


# ---- CKA -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("seed,noise", [(0, 0.3), (1, 1.0), (2, 10.0)])
def test_cka_matches_hsic_definition(method, seed, noise):
    x, y = pair(seed, noise=noise)
    want = hsic_cka(x.astype(np.float64), y.astype(np.float64))
    assert abs(cka(x, y, method) - want) < TOL


@pytest.mark.parametrize("method", METHODS)
def test_cka_invariances(method):
    x, y = pair(3)
    base = cka(x, y, method)
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(x.shape[1], x.shape[1])))
    assert abs(cka(x @ q.astype(np.float32), y, method) - base) < TOL
    for a in (1e-3, 3.7, 1e4):
        assert abs(cka(np.float32(a) * x, y, method) - base) < TOL
    offset = np.random.default_rng(5).normal(scale=10.0, size=(1, x.shape[1])).astype(np.float32)
    assert abs(cka(x + offset, y, method) - base) < TOL
    assert abs(cka(x, x, method) - 1.0) < TOL
    assert abs(cka(x, -2.0 * x @ q.astype(np.float32), method) - 1.0) < TOL
    # Not invariant to a non-isotropic scaling of the features.
    scales = np.linspace(0.1, 5.0, x.shape[1], dtype=np.float32)
    assert abs(cka(x * scales, y, method) - base) > 1e-3


def test_cka_range_and_symmetry():
    for seed in range(6):
        x, y = pair(10 + seed, noise=float(seed))
        c = cka(x, y)
        assert 0.0 <= c <= 1.0
        assert abs(c - cka(y, x)) < TOL
    # Independent data: close to 0 for n >> p.
    rng = np.random.default_rng(0)
    assert cka(rng.normal(size=(4000, 3)), rng.normal(size=(4000, 3))) < 0.01


def test_cka_feature_path_equals_gram_path():
    for n, p, q in [(300, 6, 9), (12, 40, 25)]:
        x, y = pair(n, n=n, p=p, q=q)
        assert abs(cka(x, y, "features") - cka(x, y, "gram")) < TOL
        want = hsic_cka(x.astype(np.float64), y.astype(np.float64))
        assert abs(cka(x, y) - want) < TOL


def test_cka_large_activations_many_tokens():
    x, y = pair(7, n=4096, p=16, q=16)
    want = hsic_cka(x[:512].astype(np.float64), y[:512].astype(np.float64))
    assert abs(cka(1e6 * x[:512], 1e5 * y[:512]) - want) < TOL
    assert abs(cka(1e6 * x, 1e5 * y) - cka(x, y)) < TOL


def test_cka_degenerate_is_nan():
    x, _ = pair(8)
    const = np.full_like(x, 3.7)
    for bad in (const, np.zeros_like(x), const + np.arange(x.shape[1], dtype=np.float32)):
        for method in METHODS:
            assert np.isnan(cka(bad, x, method)) and np.isnan(cka(x, bad, method))
    assert np.isnan(float(an.cka_dissimilarity(const, x)))
    # Small but real variance is not degenerate.
    tiny = (1.0 + 1e-3 * x).astype(np.float32)
    assert abs(cka(tiny, x) - 1.0) < 1e-3


def test_cka_dissimilarity():
    x, y = pair(9)
    assert abs(float(an.cka_dissimilarity(x, y)) - (1.0 - cka(x, y))) < 1e-7
    assert abs(float(an.cka_dissimilarity(x, x))) < TOL


def test_cka_jit_vmap_and_batched():
    rng = np.random.default_rng(11)
    xs = rng.normal(size=(2, 3, 50, 4)).astype(np.float32)
    ys = (xs @ rng.normal(size=(4, 6)) + rng.normal(size=(2, 3, 50, 6))).astype(np.float32)
    loop = np.array([[cka(xs[i, j], ys[i, j]) for j in range(3)] for i in range(2)])
    batched = an.batched_linear_cka(jnp.asarray(xs), jnp.asarray(ys))
    assert batched.shape == (2, 3) and batched.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(batched), loop, atol=TOL)
    jitted = jax.jit(jax.vmap(an.linear_cka))(xs[0], ys[0])
    np.testing.assert_allclose(np.asarray(jitted), loop[0], atol=TOL)
    assert abs(float(jax.jit(an.linear_cka)(xs[0, 0], ys[0, 0])) - loop[0, 0]) < TOL
    with pytest.raises(ValueError, match="leading axes"):
        an.batched_linear_cka(xs, ys[:1])
    with pytest.raises(ValueError, match="same n"):
        an.linear_cka(xs[0, 0], ys[0, 0, :-1])
    with pytest.raises(ValueError, match="method"):
        an.linear_cka(xs[0, 0], ys[0, 0], "rbf")


@pytest.mark.parametrize("method", ("auto", *METHODS))
def test_cka_matrix(method):
    rng = np.random.default_rng(12)
    layers = np.cumsum(rng.normal(size=(4, 40, 5)), axis=0).astype(np.float32)  # drifting "layers"
    other = rng.normal(size=(3, 40, 7)).astype(np.float32)
    m = np.asarray(jax.jit(lambda a: an.cka_matrix(a, method=method))(layers))
    want = np.array([[cka(a, b) for b in layers] for a in layers])
    np.testing.assert_allclose(m, want, atol=TOL)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=TOL)
    cross = np.asarray(an.cka_matrix(layers, other, method))
    assert cross.shape == (4, 3)
    np.testing.assert_allclose(cross, [[cka(a, b) for b in other] for a in layers], atol=TOL)
    with_const = np.concatenate([layers, np.ones_like(layers[:1])])
    assert np.isnan(np.asarray(an.cka_matrix(with_const, method=method))[-1]).all()


# ---- energy ----------------------------------------------------------------------------------------


def test_token_energy_known_values():
    hidden = np.zeros((2, 3, 4), np.float32)  # [B, L, D]
    hidden[0, 0, :2] = (3.0, 4.0)
    hidden[1, 2] = (1.0, 1.0, 1.0, 1.0)
    e = np.asarray(an.token_energy(hidden))
    assert e.shape == (2, 3) and e.dtype == np.float32
    np.testing.assert_allclose(e, [[5.0, 0.0, 0.0], [0.0, 0.0, 2.0]])
    np.testing.assert_allclose(np.asarray(an.mean_energy(e)), [5.0 / 3, 2.0 / 3])


def test_energy_grid_order_matches_patchify():
    rng = np.random.default_rng(0)
    b, c, t, h, w = 2, 3, 3, 4, 6
    latents = rng.normal(size=(b, c, t, h, w)).astype(np.float32)
    grid = an.token_grid(latents.shape, (1, 2, 2))
    assert grid == (3, 2, 3)
    tokens = patchify(jnp.asarray(latents), (1, 2, 2))  # [B, L, C * 4], token (f * H' + i) * W' + j
    e = np.asarray(an.token_energy_grid(tokens, grid))
    assert e.shape == (b, *grid)
    for f in range(grid[0]):
        for i in range(grid[1]):
            for j in range(grid[2]):
                patch = latents[:, :, f, 2 * i : 2 * i + 2, 2 * j : 2 * j + 2]
                np.testing.assert_allclose(
                    e[:, f, i, j], np.linalg.norm(patch.reshape(b, -1), axis=1), rtol=1e-6
                )
    # The same token index formula on a plain ramp.
    ramp = np.asarray(an.to_grid(np.arange(18), grid))
    assert ramp[2, 1, 0] == (2 * 2 + 1) * 3 + 0
    with pytest.raises(ValueError, match="do not fill"):
        an.to_grid(np.arange(17), grid)
    with pytest.raises(ValueError, match="divisible"):
        an.token_grid((3, 5, 6), (1, 2, 2))


def test_layer_and_frame_energy_against_numpy():
    rng = np.random.default_rng(1)
    grid = (3, 2, 2)
    hidden = rng.normal(size=(4, 2, 12, 8)).astype(np.float32)  # [layers, B, L, D]
    per_token = np.linalg.norm(hidden, axis=-1)
    e = np.asarray(an.token_energy_grid(hidden, grid))
    np.testing.assert_allclose(e, per_token.reshape(4, 2, 3, 2, 2), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(an.mean_energy(an.token_energy(hidden))), per_token.mean(-1), rtol=1e-6
    )
    want = np.linalg.norm(hidden.reshape(4, 2, 3, 4 * 8), axis=-1)  # whole latent frame's features
    got = np.asarray(an.frame_energy(an.token_energy(hidden), grid))
    assert got.shape == (4, 2, 3)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    means = np.asarray(an.frame_mean_energy(an.token_energy(hidden), grid))
    np.testing.assert_allclose(means, per_token.reshape(4, 2, 3, 4).mean(-1), rtol=1e-6)


def test_conditional_half():
    hidden = np.arange(2 * 3 * 4 * 5 * 2).reshape(2, 3, 4, 5, 2)  # [S, K, 2B, L, D]
    np.testing.assert_array_equal(np.asarray(an.conditional_half(hidden)), hidden[:, :, :2])
    with pytest.raises(ValueError, match="odd"):
        an.conditional_half(hidden[:, :, :3])


# ---- images ----------------------------------------------------------------------------------------


def test_video_frames():
    video = np.zeros((3, 4, 5, 6), np.float32)
    video[1] = 1.0
    frames = an.video_frames(video)
    assert frames.shape == (4, 5, 6, 3) and frames.dtype == np.uint8
    assert tuple(frames[2, 3, 4]) == (128, 255, 128)


def test_grid_layout():
    r, c, h, w = 2, 3, 4, 5
    tiles = np.zeros((r, c, h, w, 3), np.uint8)
    for i in range(r):
        for j in range(c):
            tiles[i, j] = 10 * i + j
    img = an.grid(tiles, pad=2, pad_value=255)
    assert img.shape == (r * (h + 2), c * (w + 2), 3) and img.dtype == np.uint8
    for i in range(r):
        for j in range(c):
            y0, x0 = i * (h + 2), j * (w + 2)
            assert (img[y0 : y0 + h, x0 : x0 + w] == 10 * i + j).all()
            assert (img[y0 + h : y0 + h + 2, x0 : x0 + w + 2] == 255).all()
            assert (img[y0 : y0 + h + 2, x0 + w : x0 + w + 2] == 255).all()
    assert an.grid(tiles, pad=0).shape == (r * h, c * w, 3)


def test_step_frame_grid():
    steps, f, h, w = 4, 3, 6, 7
    videos = np.random.default_rng(0).integers(0, 200, size=(steps, f, h, w, 3), dtype=np.uint8)
    img = an.step_frame_grid(videos)
    assert img.shape == (steps * (h + 1), f * (w + 1), 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(
        img[2 * (h + 1) : 2 * (h + 1) + h, 1 * (w + 1) : 1 * (w + 1) + w], videos[2, 1]
    )
    with pytest.raises(ValueError):
        an.step_frame_grid(videos[0])


def test_viridis():
    assert tuple(an.viridis(0.0)) == (68, 1, 84)
    assert tuple(an.viridis(1.0)) == (253, 231, 37)
    assert tuple(an.viridis(-3.0)) == (68, 1, 84) and tuple(an.viridis(7.0)) == (253, 231, 37)
    # Published table entry 128 (0.128729, 0.563265, 0.551229), within the documented 5 / 255.
    mid = an.viridis(128 / 255).astype(int)
    assert np.abs(mid - np.array([0.128729, 0.563265, 0.551229]) * 255).max() <= 5
    assert an.viridis(np.zeros((2, 3))).shape == (2, 3, 3)


def test_heatmap_scaling():
    values = np.arange(12, dtype=np.float32).reshape(3, 4)
    img = an.heatmap(values)
    assert img.shape == (3, 4, 3) and img.dtype == np.uint8
    assert tuple(img[0, 0]) == (68, 1, 84) and tuple(img[2, 3]) == (253, 231, 37)
    # Per panel by default: a shifted, scaled panel looks the same; a shared scale does not.
    panels = np.stack([values, 100 + 10 * values])
    np.testing.assert_array_equal(an.heatmap(panels)[1], img)
    shared = an.heatmap(panels, lo=0.0, hi=210.0)
    assert tuple(shared[0, 2, 3]) != (253, 231, 37) and tuple(shared[1, 2, 3]) == (253, 231, 37)
    # Constant panel -> lowest colour; NaN -> NAN_COLOR and ignored by the autoscale.
    assert (an.heatmap(np.full((2, 2), 5.0)) == np.array([68, 1, 84], np.uint8)).all()
    with_nan = values.copy()
    with_nan[1, 1] = np.nan
    out = an.heatmap(with_nan)
    assert tuple(out[1, 1]) == (255, 255, 255) and tuple(out[2, 3]) == (253, 231, 37)


def test_upscale():
    img = np.arange(6, dtype=np.uint8).reshape(2, 3)
    up = an.upscale(img, 3)
    assert up.shape == (6, 9) and up[4, 7] == img[1, 2]
    rgb = an.heatmap(np.arange(6.0).reshape(2, 3))
    up = an.upscale(rgb, 2)
    assert up.shape == (4, 6, 3) and (up[2:4, 4:6] == rgb[1, 2]).all()
    assert an.upscale(np.zeros((5, 2, 3, 3)), 2).shape == (5, 4, 6, 3)
