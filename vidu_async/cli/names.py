"""The download-naming flags (``--name``, ``--covers``, ``--watermarked``), shared by
``submit``, ``download`` and ``batch download``."""

from __future__ import annotations

import argparse

import attrs

from vidu_async.download import DownloadNames

__all__ = ["add_name_arguments", "download_names", "name_flags_given"]


def add_name_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("download names")
    group.add_argument(
        "--name", metavar="TEMPLATE",
        help="file name of each video, from {custom_id}, {task_id}, {line} and {index} (the "
        "creation's number); made file-system safe, never shared by two jobs: fields that run "
        "together ({custom_id}{line}) get a suffix. Default: {custom_id}; with submit, only "
        "with --download",
    )
    group.add_argument("--covers", action="store_true", help="download covers too, into covers/")
    group.add_argument("--watermarked", action="store_true",
                       help="download watermarked videos too, into watermarked/ (tasks created "
                       "with a watermark have them)")


def download_names(args: argparse.Namespace) -> DownloadNames:
    """The flags as ``DownloadNames``; ``ValueError`` naming the template when it is unusable."""
    names = DownloadNames(covers=args.covers, watermarked=args.watermarked)
    return names if args.name is None else attrs.evolve(names, template=args.name)


def name_flags_given(args: argparse.Namespace) -> list[str]:
    """The naming flags given, as typed: ``submit`` refuses them without ``--download``, where
    they would name nothing."""
    given = (("--name", args.name is not None), ("--covers", args.covers),
             ("--watermarked", args.watermarked))
    return [flag for flag, present in given if present]
