"""Convert a PyTorch Wan DiT checkpoint (official or Diffusers layout) to a cosjax Orbax folder.

    python convert/convert_dit.py ckpt_src/Wan2.2-I2V-A14B ckpt/wan2.2-i2v-a14b --dtype bfloat16

Same as `cosjax convert SRC DST`; see `cosjax convert --help`.
"""

import sys

from cosjax.cli import main

if __name__ == "__main__":
    sys.exit(main(["convert", *sys.argv[1:]]))
