"""``tbpipe build-images``: build (and push) the component and TensorBoard images."""

from __future__ import annotations

import argparse

from tbpipe.pipelines.runners.images import VARIANTS, build_images, human_size


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``build-images``."""
    cmd = subparsers.add_parser("build-images", help="build (and push) the docker images")
    cmd.add_argument("--variant", action="append", choices=VARIANTS, default=None,
                     help="image to build, repeatable (default: all of cpu, gpu, tensorboard)")
    cmd.add_argument("--registry", default=None,
                     help="registry prefix of the tags (default: localhost, local only)")
    cmd.add_argument("--push", action="store_true", help="push the images after building")
    cmd.add_argument("--base-image", default=None,
                     help="Python 3.11 base image (offline: docker/bootstrap-base.sh builds "
                          "tbpipe-base:bookworm)")
    cmd.add_argument("--extra-ca-certs", action="append", default=None, metavar="FILE",
                     help="PEM CA certificates to trust in the images (TLS-inspecting proxies)")
    cmd.set_defaults(handler=run_build_images)


def run_build_images(args: argparse.Namespace) -> int:
    """``tbpipe build-images``: build, then a table of tags and sizes."""
    built = build_images(args.variant or list(VARIANTS), registry=args.registry,
                         base_image=args.base_image, extra_ca_certs=args.extra_ca_certs,
                         push=args.push)
    print("")
    for image in built:
        print(f"{image.variant:<12} {image.tag:<48} {human_size(image.size):>10}")
    return 0
