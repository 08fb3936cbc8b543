"""``ecgfm review-queue`` and ``ecgfm review-apply``: the re-annotation loop on the command line.

Plain functions, registered by the main ``ecgfm`` app with
``app.command("review-queue")(review_queue_command)`` and
``app.command("review-apply")(review_apply_command)``; :data:`app` runs them on their own.
Importing this module imports typer only (pandas, torch and Lightning load when a command runs).

Exit status: 0 on success; 1 on a data, configuration or file problem (printed as ``error: ...``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

__all__ = ["app", "review_apply_command", "review_queue_command"]


def _say(message: str) -> None:
    typer.echo(message, err=True)


def _guard(job: Any) -> Any:
    from ecgfm.errors import ECGError

    try:
        return job()
    except ECGError as exc:
        _say(f"error: {exc}")
        raise typer.Exit(1) from None


def _list(text: str | None) -> tuple[str, ...] | None:
    return tuple(v.strip() for v in text.split(",") if v.strip()) if text else None


def review_queue_command(
    out: Annotated[Path, typer.Option("--out", "-o", help="The queue CSV to write (record_id, rank, score, method, reason, given_labels, suggested_labels, corrected_labels).")],
    top: Annotated[int, typer.Option("--top", "-k", help="Records in the queue (K).")] = 100,
    method: Annotated[str, typer.Option("--method", help="Ranking: confident (confident learning), uncertainty, loss or random.")] = "confident",
    store: Annotated[Path | None, typer.Option("--store", help="The corpus store (folder, or its manifest file) whose labels are reviewed (default: the config's data.store).")] = None,
    predictions: Annotated[list[Path] | None, typer.Option("--predictions", "-p", help="Out-of-fold predictions CSV/Parquet (record_id + one probability column per label); repeat for several models.")] = None,
    labels: Annotated[str | None, typer.Option("--labels", help="Comma-separated label ids to review (default: every probability column of the predictions).")] = None,
    overrides_file: Annotated[Path | None, typer.Option("--overrides", help="A data.overrides file applied to the store's labels first (labels corrected in an earlier round); default: the config's data.overrides.")] = None,
    exclude: Annotated[Path | None, typer.Option("--exclude", help="A CSV with a record_id column (e.g. an earlier queue): those records are left out.")] = None,
    task: Annotated[str | None, typer.Option("--task", help="multilabel (also binary) or multiclass (default: from the config's head, else multilabel).")] = None,
    rank_by: Annotated[str, typer.Option("--rank-by", help="confident: self_confidence or normalized_margin.")] = "self_confidence",
    kind: Annotated[str, typer.Option("--uncertainty", help="uncertainty: entropy, margin or bald (bald needs several predictions: --mc-passes or repeated --predictions).")] = "entropy",
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random ranking and of the probes' folds (--encoder).")] = 0,
    config: Annotated[Path | None, typer.Option("--config", "-c", help="A training config: compute the out-of-fold predictions first (k folds, each trained with it) unless --predictions is given.")] = None,
    folds: Annotated[int, typer.Option("--folds", help="With --config: patient-grouped folds (k).")] = 5,
    oof_dir: Annotated[Path | None, typer.Option("--oof-dir", help="With --config: where the folds' runs and oof.csv go (default: <out_dir>/oof); a rerun resumes there.")] = None,
    mc_passes: Annotated[int, typer.Option("--mc-passes", help="With --config: dropout passes per held-out record (for --uncertainty bald).")] = 0,
    encoder: Annotated[Path | None, typer.Option("--encoder", help="A frozen encoder (a portable model not trained on these labels, e.g. from ecgfm pretrain): out-of-fold predictions of linear probes on its features, in seconds; with --predictions or --config the ranking uses the mean of both.")] = None,
    probe_dir: Annotated[Path | None, typer.Option("--probe-dir", help="With --encoder: where the embeddings (a cache), folds and the probes' oof.csv go (default: <out>.probe/).")] = None,
    config_overrides: Annotated[list[str] | None, typer.Argument(help="With --config: overrides section.key=value, e.g. trainer.max_epochs=15.", show_default=False)] = None,
) -> None:
    """Rank records for re-annotation by disagreement between their labels and out-of-fold predictions."""

    def job() -> Any:
        import numpy as np

        from ecgfm.active.oof import out_of_fold, read_predictions
        from ecgfm.active.review import given_labels, review_queue, write_queue
        from ecgfm.errors import ValidationError

        options: dict[str, Any] = {}
        if method == "confident":
            options["rank_by"] = rank_by
        elif method == "uncertainty":
            options["kind"] = kind
        label_columns = None
        the_task, the_store, the_overrides = task, store, overrides_file
        ids: list[str] | None = None
        given = probs = None
        names = _list(labels)
        if config is not None:
            from ecgfm.train.config import load_config

            cfg = load_config(config, list(config_overrides or []))
            the_store = the_store or (Path(cfg.data.store) if cfg.data.store else None)
            the_overrides = the_overrides or (Path(cfg.data.overrides) if cfg.data.overrides else None)
            label_columns = cfg.data.label_columns
            the_task = the_task or ("multiclass" if cfg.model.head == "multiclass" else "multilabel")
            if not predictions:
                if method == "uncertainty" and kind == "bald" and mc_passes < 2:
                    raise ValidationError("--uncertainty bald needs several predictions per record: --mc-passes N (N >= 2)")
                oof = out_of_fold(cfg, folds, oof_dir, seed=None, mc_passes=mc_passes, log=_say)
                _say(f"out-of-fold predictions: {oof.path}")
                ids = list(oof.record_ids)
                probs = oof.mc if (method == "uncertainty" and kind == "bald") else oof.probabilities[None]
                if names is not None:
                    missing = [n for n in names if n not in oof.labels]
                    if missing:
                        raise ValidationError(f"--labels: {missing} are not outputs of the folds ({', '.join(oof.labels)})")
                    cols = [oof.labels.index(n) for n in names]
                    probs, given = probs[..., cols], oof.given[:, cols]
                else:
                    names, given = oof.labels, oof.given
        elif config_overrides:
            raise ValidationError(f"config overrides {config_overrides} need --config")
        if probs is None and predictions:
            ids, names, probs = read_predictions(predictions, names)
        if probs is None and encoder is None:
            raise ValidationError("give --predictions FILE (out-of-fold predictions), --config FILE to compute them, "
                                  "or --encoder MODEL for linear probes on a frozen encoder")
        if the_store is None:
            raise ValidationError("give --store (the corpus store whose labels are reviewed)")
        the_store = the_store.parent if the_store.is_file() else the_store  # the manifest file -> its store
        if encoder is not None:
            ids, given, probs = _with_probes(encoder, the_store, ids, names, given, probs, folds=folds, seed=seed,
                                             out_dir=probe_dir or out.with_name(out.name + ".probe"),
                                             overrides=the_overrides, label_columns=label_columns,
                                             task=the_task or "multilabel", bald=method == "uncertainty" and kind == "bald")
        if given is None:
            ids, given = given_labels(the_store, names, record_ids=ids, label_columns=label_columns,
                                      overrides=the_overrides)
        skip: list[str] = []
        if exclude is not None:
            import pandas as pd

            from ecgfm.errors import ReadError

            try:
                skip = pd.read_csv(exclude, dtype=str, usecols=["record_id"])["record_id"].tolist()
            except (OSError, ValueError) as error:
                raise ReadError(exclude, f"cannot read the record ids to exclude (a CSV with record_id): {error}") from None
        queue = review_queue(ids, given, np.asarray(probs), names, method=method, top=top,
                             task=the_task or "multilabel", seed=seed, exclude=skip, **options)
        path = write_queue(queue, out)
        flagged = int((queue["given_labels"] != queue["suggested_labels"]).sum())
        _say(f"wrote {len(queue)} of {len(ids)} records to {path} (method {method}; "
             f"{flagged} with a confident-learning suggestion that differs from the given labels)")
        return path

    _guard(job)


def _with_probes(encoder: Path, store: Path, ids: list[str] | None, names: tuple[str, ...] | None, given: Any,
                 probs: Any, *, folds: int, seed: int, out_dir: Path, overrides: Path | None, label_columns: Any,
                 task: str, bald: bool) -> tuple[list[str], Any, Any]:
    """Out-of-fold probe predictions, alone or beside the network's: ``(ids, given, probs [M, N, C])``."""
    import numpy as np

    from ecgfm.active.probe import probe_out_of_fold
    from ecgfm.errors import ValidationError

    if bald:
        raise ValidationError("--uncertainty bald measures disagreement between dropout passes; use it without --encoder")
    if names is None:
        raise ValidationError("--encoder alone: give --labels (the label ids to review) or --config")
    oof = probe_out_of_fold(encoder, store, names, folds=folds, out_dir=out_dir, overrides=overrides,
                            label_columns=label_columns, seed=seed, task=task, log=_say)
    _say(f"probe out-of-fold predictions: {oof.path}")
    if probs is None:
        return list(oof.record_ids), oof.given, oof.probabilities[None]
    assert ids is not None
    where = {r: i for i, r in enumerate(oof.record_ids)}
    missing = [r for r in ids if r not in where]
    if missing:
        raise ValidationError(f"--encoder: {len(missing)} predicted records are not in the store's training split "
                              f"(e.g. {missing[:3]})")
    rows = [where[r] for r in ids]
    # the network's predictions (the mean of several files or passes) and the probe's, equally weighted
    both = np.stack([np.asarray(probs).mean(axis=0), oof.probabilities[rows]])
    return ids, given if given is not None else oof.given[rows], both


def review_apply_command(
    corrections: Annotated[Path, typer.Argument(help="The review queue with corrected_labels filled (ids ';'-separated, 'none' for no label; empty = not reviewed).")],
    store: Annotated[Path, typer.Option("--store", help="The corpus store the queue was made from.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="The overrides CSV to write; train on it with data.overrides=FILE.")],
    overrides_file: Annotated[Path | None, typer.Option("--overrides", help="The overrides the queue's given labels came from (an earlier round); carried into --out.")] = None,
) -> None:
    """Fold corrected labels back in: write a data.overrides file for retraining."""

    def job() -> Any:
        from ecgfm.active.review import fold_back

        the_store = store.parent if store.is_file() else store
        result = fold_back(corrections, out, store=the_store, overrides=overrides_file)
        _say(f"{result['reviewed']} records reviewed: {result['changed']} changed, {result['unchanged']} "
             f"confirmed; {result['skipped']} not reviewed. Wrote {result['out']}; retrain with "
             f"ecgfm train --config CONFIG data.overrides={result['out']}")
        return result

    _guard(job)


app = typer.Typer(help="Re-annotation queue for noisy labels.", add_completion=False,
                  pretty_exceptions_enable=False, no_args_is_help=True)
app.command("review-queue")(review_queue_command)
app.command("review-apply")(review_apply_command)

if __name__ == "__main__":
    app()
