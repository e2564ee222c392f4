"""Linear centered kernel alignment (CKA; Kornblith et al., 2019, "Similarity of Neural Network
Representations Revisited").

Definition. A representation is a matrix X [n, p] whose n rows are *examples* (here usually the
tokens of one video at one layer and step; the same n tokens, in the same order, for both
representations compared) and whose p columns are features (channels). Let H = I_n - 1 1^T / n be
the n x n centering matrix, K = X X^T and L = Y Y^T the linear-kernel Gram matrices, and
HSIC(K, L) = tr(K H L H) / (n - 1)^2. Then

    CKA(X, Y) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))
              = ||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F),

where Xc = H X, Yc = H Y subtract each column's mean over the examples (the second line is the
same number computed from feature-space Gram matrices, since tr(K H L H) = ||Yc^T Xc||_F^2).
CKA is the cosine of the angle between the centered Gram matrices HKH and HLH seen as vectors, so
it lies in [0, 1]; it is invariant to orthogonal transforms of the features, to isotropic scaling
and to adding one constant vector to every row (example), but not to non-isotropic scaling of features.

Dissimilarity. `cka_dissimilarity = 1 - CKA`: 0 for representations equal up to rotation and
isotropic scale, 1 for ones whose centered Gram matrices are orthogonal. It is the "information
flow" quantity we plot between layers or steps (the paper's exact variant is not public; 1 - linear
CKA is the common choice). It is not a metric (arccos(CKA) is).

Degenerate inputs. A representation whose columns all have zero variance over the examples (up to
float32 resolution: ||Xc||_F <= 1e-5 ||X||_F, or X == 0) has HKH = 0 and CKA is 0 / 0. We return
NaN there rather than a made-up 0 or 1, so that, e.g., an unfilled (all-zero) capture buffer shows
up as missing instead of reading as "maximally dissimilar".

Numerics. All math is float32. Each centered representation is first divided by its Frobenius
norm (CKA does not change), so the Gram entries stay in [-1, 1] and do not overflow for large
activations and many tokens. Two equivalent paths: "features" forms the [p, p], [q, q] and [q, p]
feature Gram matrices (cost ~ n (p + q)^2, the right one for n >> p, e.g. thousands of tokens of
width <= a few thousand); "gram" forms the centered n x n example Gram matrices Xc Xc^T = HKH and
Yc Yc^T = HLH (cost ~ n^2 (p + q), for few examples with wide features). "auto" picks the cheaper
one from the static shapes. Centering is two-pass (the mean of the residual is removed again), so a
constant column centers to exactly 0 even for ~1e5 tokens.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

DEGENERATE_RTOL = 1e-5
"""Relative centered-norm threshold below which a representation counts as constant (CKA = NaN)."""


# float32 products at full precision (TPU and GPU default float32 matmuls to bf16 / tf32 passes).
_mm = functools.partial(jnp.matmul, precision=jax.lax.Precision.HIGHEST)


def _method(n: int, p: int, q: int, method: str) -> str:
    if method == "auto":
        return "features" if p + q <= n else "gram"
    if method not in ("features", "gram"):
        raise ValueError(f"method={method!r}; use 'auto', 'features' or 'gram'")
    return method


def _center(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """[n, p] -> (Xc / ||Xc||_F, degenerate flag), float32; Xc = X with columns centered."""
    x = jnp.asarray(x, jnp.float32)
    xc = x - jnp.mean(x, axis=0, keepdims=True)
    xc = xc - jnp.mean(xc, axis=0, keepdims=True)  # second pass: removes the first mean's rounding
    norm_c = jnp.linalg.norm(xc)
    degenerate = norm_c <= DEGENERATE_RTOL * jnp.linalg.norm(x)
    return xc / jnp.where(degenerate, 1.0, norm_c), degenerate


def _check(x: jax.Array, y: jax.Array) -> None:
    if x.ndim != 2 or y.ndim != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"need x [n, p] and y [n, q] with the same n, got {x.shape} and {y.shape}")


def _finish(num: jax.Array, den: jax.Array, degenerate: jax.Array) -> jax.Array:
    cka = num / jnp.where(degenerate, 1.0, den)
    return jnp.where(degenerate, jnp.nan, jnp.clip(cka, 0.0, 1.0))


def linear_cka(x: jax.Array, y: jax.Array, method: str = "auto") -> jax.Array:
    """Linear CKA between two representations of the same n examples.

    Args:
      x: [n, p] (any float dtype; computed in float32), rows = examples (tokens), columns = features.
      y: [n, q], the same examples in the same row order.
      method: "features" (feature-space Gram matrices, for n >> p), "gram" (centered n x n Gram
        matrices) or "auto" (the cheaper one for these static shapes). Same value either way.

    Returns:
      float32 scalar in [0, 1]; NaN if x or y has zero variance over the examples (see module doc).
      Works under jit and vmap; use `batched_linear_cka` for leading batch axes.
    """
    _check(x, y)
    n, p = x.shape
    q = y.shape[1]
    xc, deg_x = _center(x)
    yc, deg_y = _center(y)
    degenerate = deg_x | deg_y
    if _method(n, p, q, method) == "features":
        num = jnp.sum(jnp.square(_mm(yc.T, xc)))
        den = jnp.linalg.norm(_mm(xc.T, xc)) * jnp.linalg.norm(_mm(yc.T, yc))
    else:
        # Xc Xc^T = H K H: centering the features first is exact and avoids the float32
        # cancellation of double-centering K = X X^T when the features have a large mean.
        k = _mm(xc, xc.T)
        l_ = _mm(yc, yc.T)
        num = jnp.sum(k * l_)
        den = jnp.linalg.norm(k) * jnp.linalg.norm(l_)
    return _finish(num, den, degenerate)


def cka_dissimilarity(x: jax.Array, y: jax.Array, method: str = "auto") -> jax.Array:
    """1 - linear_cka(x, y): float32 scalar in [0, 1] (NaN for degenerate inputs). Args as `linear_cka`."""
    return 1.0 - linear_cka(x, y, method)


def batched_linear_cka(x: jax.Array, y: jax.Array, method: str = "auto") -> jax.Array:
    """linear_cka over matching leading axes: x [..., n, p], y [..., n, q] -> float32 [...].

    The leading shapes must be equal (no broadcasting); they are flattened and vmapped.
    """
    if x.shape[:-2] != y.shape[:-2]:
        raise ValueError(f"leading axes differ: x {x.shape}, y {y.shape}")
    lead = x.shape[:-2]
    xf = jnp.reshape(x, (-1, *x.shape[-2:]))
    yf = jnp.reshape(y, (-1, *y.shape[-2:]))
    out = jax.vmap(lambda a, b: linear_cka(a, b, method))(xf, yf)
    return out.reshape(lead)


def cka_matrix(xs: jax.Array, ys: jax.Array | None = None, method: str = "auto") -> jax.Array:
    """All-pairs linear CKA, e.g. layer x layer or step x step ("information flow").

    Args:
      xs: [A, n, p], A representations of the same n examples (e.g. one layer each).
      ys: [B, n, q], or None for ys = xs.
      method: as in `linear_cka`.

    Returns:
      float32 [A, B], entry (a, b) = linear_cka(xs[a], ys[b]). The self terms are computed once per
      representation and the A * B cross terms one pair at a time (`lax.map`), so memory is a
      centered float32 copy of the inputs plus one [q, p] (or [n, n]) product at a time.
    """
    same = ys is None
    ys = xs if same else ys
    if xs.ndim != 3 or ys.ndim != 3 or xs.shape[1] != ys.shape[1]:
        raise ValueError(f"need xs [A, n, p] and ys [B, n, q] with the same n, got {xs.shape}, {ys.shape}")
    n, p, q = xs.shape[1], xs.shape[2], ys.shape[2]
    features = _method(n, p, q, method) == "features"

    def self_term(x):
        return jnp.linalg.norm(_mm(x.T, x)) if features else jnp.linalg.norm(_mm(x, x.T))

    xc, deg_x = jax.vmap(_center)(xs)
    yc, deg_y = (xc, deg_x) if same else jax.vmap(_center)(ys)
    sx = jax.lax.map(self_term, xc)
    sy = sx if same else jax.lax.map(self_term, yc)

    def cross(ab):
        a, b = xc[ab[0]], yc[ab[1]]
        return jnp.sum(jnp.square(_mm(b.T, a))) if features else jnp.sum(_mm(a, a.T) * _mm(b, b.T))

    na, nb = xs.shape[0], ys.shape[0]
    ia, ib = jnp.meshgrid(jnp.arange(na), jnp.arange(nb), indexing="ij")
    num = jax.lax.map(cross, (ia.ravel(), ib.ravel())).reshape(na, nb)
    return _finish(num, sx[:, None] * sy[None, :], deg_x[:, None] | deg_y[None, :])
