"""Import a reference PyTorch checkpoint: ``rdinet-import-torch --checkpoint C --model resnet38 --out m.keras``.

Needs the optional torch dependency (``pip install "rdinet_tf[torch]"``); see
:mod:`rdinet_tf.models.torch_checkpoint` for what is checked.
"""

from pathlib import Path

from rdinet_lite import arguments, files
from rdinet_lite.errors import InputError
from rdinet_tf.catalog import MODELS


def parser():
    parser = arguments.ArgumentParser(prog="rdinet-import-torch", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True,
                        help="PyTorch checkpoint (.pth / .pth.tar) of the authors' code, "
                        "https://github.com/VITA-Group/triple-wins")
    parser.add_argument("--model", required=True, choices=MODELS, help="the checkpoint's architecture")
    parser.add_argument("--out", required=True, help="output .keras file")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    return parser


@arguments.command(parser)
def main(args):
    out = Path(args.out)
    if out.suffix != ".keras":
        raise InputError(f"--out must name a .keras file; got {args.out!r}")
    files.check_output(out, directory=False, overwrite=args.overwrite, inputs=[args.checkpoint])
    from rdinet_tf.models.torch_checkpoint import load_torch_checkpoint  # after parsing: --help loads no TensorFlow

    with files.lock(out):
        try:
            model = load_torch_checkpoint(args.checkpoint, args.model)
        except ImportError as error:
            raise InputError(f"{error}; install torch with pip install \"rdinet_tf[torch]\"") from error
        files.publish(out.parent, {out.name: model.save}, replace=args.overwrite)
    print(f"wrote {out} ({args.model}, {model.num_exits} exits)")


if __name__ == "__main__":
    raise SystemExit(main())
