"""The key-map engine: our parameter tree <-> the tensor names of a PyTorch checkpoint layout.

A model's key map is a table of `KeySpec` rows (`dit_keys`, `vae_keys`, `t5_keys` hold the tables).
A row names one leaf of our tree, its key in each layout, and the transform from the PyTorch tensor
to our leaf. The engine does the rest the same way for every model: the expected keys, the check of
a checkpoint's keys, shapes and dtypes (before any weight data is read), and the streaming of leaves
one at a time into a nested tree.

Layouts (the same names for every model):
  * "official": the names of the Wan reference code (`WanModel`, `WanVAE_`, `T5Encoder`), as in the
    official repos' `.safetensors` / `.pth` files;
  * "diffusers": the names of a Diffusers repo (`WanTransformer3DModel`, `AutoencoderKLWan`, and
    transformers' `UMT5EncoderModel` in its `text_encoder/`).
A new layout is one more name per row (and its probe in the reader that detects it).

Stacked rows hold a `{i}` placeholder for the layer index and fill the leading layer axis of our
leaf from layers 0..num_layers-1. A row may accept several names for one tensor (tied weights), the
first one preferred.

Transforms (PyTorch tensor -> our leaf):
  "same"        unchanged;
  "linear"      Linear weight [out, in] -> Dense kernel [in, out];
  "patch"       Conv3d weight [D, C, pt, ph, pw] -> Dense kernel [C*pt*ph*pw, D];
  "table"       modulation [1, k, D] -> [k, D];
  "conv"        ConvNd weight [O, I, *k] -> kernel [*k, I, O];
  "norm"        RMS norm gamma [C, 1, 1, 1] -> scale [C];
  "image_norm"  RMS norm gamma [C, 1, 1] (2-D attention) -> scale [C].
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Literal

import jax
import numpy as np

from cosjax.weights.tensors import CheckpointError, Entry, describe_keys, is_float, read_finite

Layout = Literal["official", "diffusers"]
LAYOUTS: tuple[Layout, ...] = ("official", "diffusers")
Path_ = tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class KeySpec:
    """One leaf of our tree and where it comes from.

    Attributes:
      path: path of the leaf in our parameter tree.
      names: layout -> accepted keys of its tensor, preferred first (`{i}` = layer index when stacked).
      transform: PyTorch tensor -> our leaf (see the module docstring).
      stacked: the leaf has a leading layer axis filled from `{i}` = 0..num_layers-1.
    """

    path: Path_
    names: Mapping[str, tuple[str, ...]]
    transform: str = "same"
    stacked: bool = False

    def keys(self, layout: str, layer: int | None = None) -> tuple[str, ...]:
        """The accepted keys of this leaf's tensor (of one layer) in `layout`."""
        return tuple(n.format(i=layer) if self.stacked else n for n in self.names[layout])

    def key(self, layout: str, layer: int | None = None) -> str:
        """The preferred key in `layout`."""
        return self.keys(layout, layer)[0]

    @property
    def official(self) -> str:
        return self.names["official"][0]

    @property
    def diffusers(self) -> str:
        return self.names["diffusers"][0]


def spec(
    path: Path_,
    official: str | tuple[str, ...],
    diffusers: str | tuple[str, ...],
    transform="same",
    stacked=False,
):
    """A `KeySpec` from its two layouts' names (a string, or a tuple of accepted names)."""
    names = {
        layout: (name,) if isinstance(name, str) else tuple(name)
        for layout, name in (("official", official), ("diffusers", diffusers))
    }
    return KeySpec(tuple(path), names, transform, stacked)


def torch_shape(
    spec: KeySpec, leaf_shape: tuple[int, ...], patch_size: tuple[int, ...] = ()
) -> tuple[int, ...]:
    """The PyTorch tensor shape (one layer) that becomes our leaf of shape `leaf_shape`.

    `patch_size` (pt, ph, pw) is needed by the "patch" transform only.
    """
    shape = tuple(leaf_shape[1:] if spec.stacked else leaf_shape)
    t = spec.transform
    if t == "linear":
        return shape[::-1]
    if t == "patch":
        return (shape[1], shape[0] // int(np.prod(patch_size)), *patch_size)
    if t == "table":
        return (1, *shape)
    if t == "conv":
        return (shape[-1], shape[-2], *shape[:-2])
    if t == "norm":
        return (shape[0], 1, 1, 1)
    if t == "image_norm":
        return (shape[0], 1, 1)
    if t == "same":
        return shape
    raise ValueError(f"unknown transform {t!r}")


def to_leaf(spec: KeySpec, tensor: np.ndarray) -> np.ndarray:
    """One PyTorch tensor (one layer) in our layout, still in its source dtype."""
    t = spec.transform
    if t == "linear":
        return tensor.T
    if t == "patch":
        return tensor.reshape(tensor.shape[0], -1).T
    if t == "table":
        return tensor[0]
    if t == "conv":
        return np.transpose(tensor, (*range(2, tensor.ndim), 1, 0))
    if t in ("norm", "image_norm"):
        return tensor.reshape(-1)
    return tensor


def leaf_shapes(abstract_tree) -> dict[Path_, tuple[int, ...]]:
    """A (possibly abstract) nested-dict tree's leaves as {path: shape}."""
    flat = jax.tree_util.tree_flatten_with_path(abstract_tree)[0]
    return {tuple(k.key for k in path): tuple(leaf.shape) for path, leaf in flat}


@dataclasses.dataclass(frozen=True)
class KeyMap:
    """A model's key table bound to one config.

    Attributes:
      what: the model, for messages ("DiT", "VAE", "umT5").
      specs: the rows, one per leaf of our tree.
      leaves: our tree's leaves {path: shape} for this config (from `jax.eval_shape`).
      num_layers: layers of the stacked rows.
      described: the config in messages ("this config", "dim=..., ffn_dim=...").
      patch_size: for "patch" rows.
    """

    what: str
    specs: tuple[KeySpec, ...]
    leaves: Mapping[Path_, tuple[int, ...]]
    num_layers: int = 0
    described: str = "this config"
    patch_size: tuple[int, ...] = ()

    def __post_init__(self):
        covered = {s.path for s in self.specs}
        if covered != set(self.leaves) or len(covered) != len(self.specs):  # our bug, not the file's
            raise RuntimeError(
                f"{self.what} key map and model disagree: {sorted(covered ^ set(self.leaves))}"
            )

    def layers(self, spec: KeySpec) -> list[int | None]:
        return list(range(self.num_layers)) if spec.stacked else [None]

    def torch_shape(self, spec: KeySpec) -> tuple[int, ...]:
        return torch_shape(spec, self.leaves[spec.path], self.patch_size)

    def expected(self, layout: str) -> dict[str, tuple[KeySpec, int | None]]:
        """Every key a checkpoint may hold in `layout` (all accepted names), with its row and layer."""
        return {
            key: (s, layer) for s in self.specs for layer in self.layers(s) for key in s.keys(layout, layer)
        }

    def check(
        self,
        layout: str,
        shapes: Mapping[str, tuple[int, ...]],
        files: Mapping[str, object] | None = None,
        where: object = "checkpoint",
        dtypes: Mapping[str, np.dtype] | None = None,
    ) -> list[tuple[KeySpec, list[str]]]:
        """Checks a checkpoint's keys, shapes (and dtypes, if given) before any data is read.

        Args:
          layout: "official" or "diffusers".
          shapes: key -> PyTorch tensor shape, as found in the checkpoint.
          files: key -> the file holding it (named in errors).
          where: the checkpoint, named in errors about missing and unexpected keys.
          dtypes: key -> dtype; every tensor must be floating point.

        Returns:
          The plan: for each row, the key to read per layer (one key for an unstacked leaf).

        Raises:
          CheckpointError naming the missing, unexpected, mis-shaped or non-float keys and their files.
        """
        files = files or {}
        per_row = [(s, [s.keys(layout, layer) for layer in self.layers(s)]) for s in self.specs]
        missing = [
            " or ".join(names)
            for _, per_layer in per_row
            for names in per_layer
            if not shapes.keys() & set(names)
        ]
        if missing:
            raise CheckpointError(
                f"{where}: {len(missing)} {layout}-layout {self.what} key(s) missing for {self.described}: "
                f"{describe_keys(missing, files)}"
            )
        known = {name for _, per_layer in per_row for names in per_layer for name in names}
        unexpected = [k for k in shapes if k not in known]
        if unexpected:
            raise CheckpointError(
                f"{where}: unexpected {layout}-layout {self.what} key(s) for {self.described}: "
                f"{describe_keys(unexpected, files)}"
            )
        for s, per_layer in per_row:
            want = self.torch_shape(s)
            for key in (name for names in per_layer for name in names if name in shapes):
                if tuple(shapes[key]) != want:
                    raise CheckpointError(
                        f"{files.get(key, where)}: tensor {key!r} has shape {tuple(shapes[key])}, expected "
                        f"{want} for {self.described}"
                    )
        for key, dtype in (dtypes or {}).items():
            if not is_float(dtype):
                raise CheckpointError(f"{files.get(key, where)}: tensor {key!r} has dtype {dtype}, not float")
        return [
            (s, [next(n for n in names if n in shapes) for names in per_layer]) for s, per_layer in per_row
        ]

    def check_entries(
        self, layout: str, entries: Mapping[str, Entry], where: object
    ) -> list[tuple[KeySpec, list[str]]]:
        """`check` on stored entries (their shapes, files and dtypes)."""
        return self.check(
            layout,
            {k: e.shape for k, e in entries.items()},
            {k: e.file for k, e in entries.items()},
            where,
            {k: e.dtype for k, e in entries.items()},
        )

    def iter_leaves(
        self,
        plan: list[tuple[KeySpec, list[str]]],
        entries: Mapping[str, Entry],
        dtype: np.dtype,
        allow_nonfinite: bool = False,
    ) -> Iterator[tuple[Path_, np.ndarray]]:
        """Yields (path, leaf) in our layout and `dtype`, one leaf at a time.

        A stacked leaf is one preallocated [num_layers, ...] array filled layer by layer. Every tensor
        is checked finite as it is read (`tensors.read_finite`: a `NonFiniteError` names key and file).
        """
        for s, keys in plan:
            if not s.stacked:
                tensor = read_finite(entries[keys[0]], keys[0], dtype, allow_nonfinite)
                yield s.path, np.ascontiguousarray(to_leaf(s, tensor), dtype)
                continue
            out = np.empty(self.leaves[s.path], dtype)
            for layer, key in enumerate(keys):
                out[layer] = to_leaf(s, read_finite(entries[key], key, dtype, allow_nonfinite))
            yield s.path, out
            del out  # let the consumer free this leaf before the next one is allocated


def set_leaf(tree: dict, path: Path_, value) -> dict:
    """Puts `value` at `path` of a nested dict, creating the inner dicts; returns `tree`."""
    node = tree
    for name in path[:-1]:
        node = node.setdefault(name, {})
    node[path[-1]] = value
    return tree


def build_tree(leaves: Iterable[tuple[Path_, np.ndarray]], place=None) -> dict:
    """A nested dict from (path, leaf) pairs, each leaf passed through `place(path, leaf)` (e.g. onto a
    device) as soon as it arrives, so its host copy can go before the next is read."""
    tree: dict = {}
    for path, leaf in leaves:
        set_leaf(tree, path, leaf if place is None else place(path, leaf))
        del leaf
    return tree
