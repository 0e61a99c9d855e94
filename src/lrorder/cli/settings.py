"""The verbs the settings declare (`lrorder.<setting>.verbs`), made into sub-parsers; each
handler is imported only when its verb runs."""

from __future__ import annotations

import argparse
import functools
from typing import Any

from lrorder.cli.options import Parser, add_verb
from lrorder.core.recipe import Verb, all_verbs


def add(verbs: argparse._SubParsersAction) -> None:
    groups = {"": verbs}
    for verb in all_verbs().values():
        group, _, word = verb.name.rpartition(" ")
        parser = add_verb(groups[group], word, verb.help, verb.example)
        if verb.handler is None:
            groups[verb.name] = parser.add_subparsers(dest=verb.name, required=True, parser_class=Parser)
            continue
        for flags, options in verb.options:
            parser.add_argument(*flags, **options)
        parser.set_defaults(func=functools.partial(_call, verb))


def _call(verb: Verb, args: argparse.Namespace) -> Any:
    return verb.load()(args)
