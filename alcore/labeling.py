"""Labeling by people: labeling jobs out, annotations in, and the record of both.

Active-learning libraries leave "return ids, label elsewhere, come back" to their users. Here it is
data and files:

- :class:`~alcore.run_state.LabelingLog` records every exported batch (round, ids, the proxy's
  pre-annotation) and every imported file. It lives inside the run state
  (:mod:`alcore.run_state`) and is saved in the same atomic write as the labels and the cost ledger.
- :func:`render_job` turns a batch into a CSV (a spreadsheet to fill in) and a Label Studio
  task-import JSON (the image, the sample id, and the proxy's predicted class as a pre-annotation).
- :func:`read_annotations` reads a filled CSV, a Label Studio CSV export, or a Label Studio JSON
  export (full or JSON-MIN); :func:`check_annotations` validates every row against the label state
  and the ids that were asked for.
- :func:`ingest_inbox` commits the valid rows of every file in an inbox folder, then moves the file
  to ``done/``. Committing a label that is already committed with the same value is a no-op, so a
  crash anywhere loses nothing and pays nothing twice.

Nothing read from an annotation file is ever used as a path or unpickled: only sample ids and
class names are taken from it.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from alcore._io import write_text_atomic
from alcore.errors import ConfigError, LabelError, LabelImportError, problem
from alcore.run_state import Batch, ExperimentState, LabelingLog
from alcore.state import LabelState, as_int_ids

__all__ = [
    "AnnotationRow",
    "Batch",
    "ImportResult",
    "LabelingLog",
    "check_annotations",
    "import_annotations",
    "inbox_files",
    "ingest_inbox",
    "label_config_xml",
    "parse_id",
    "read_annotations",
    "render_job",
]

#: Annotation files larger than this are refused (a labeling batch is thousands of rows, not GBs).
MAX_FILE_BYTES = 64 << 20
#: At most this many row problems are listed in one message (the count is always given).
MAX_LISTED = 25
SUFFIXES = (".csv", ".json")
_INT = re.compile(r"-?[0-9]+")


# ---------------------------------------------------------------- jobs out
def image_reference(template: str, *, path: str, id: int, image_root: str | None = None) -> str:
    """Fill an ``labeling.image_url`` template for one image.

    Fields: ``{path}`` (absolute file path), ``{relpath}`` (relative to ``image_root``),
    ``{file}`` (base name), ``{id}``. When the template is a URL (holds ``://`` or ``?``) the path
    fields are percent-encoded (slashes kept). Only these four names are replaced: a template is
    never evaluated.
    """
    is_url = "://" in template or "?" in template
    values = {"path": path, "file": os.path.basename(path), "id": str(int(id))}
    if "{relpath}" in template:
        if not image_root:
            raise ConfigError(problem("image_url uses {relpath} without labeling.image_root", fix="set image_root"))
        values["relpath"] = Path(os.path.relpath(path, image_root)).as_posix()
    if is_url:
        values = {k: v if k == "id" else quote(v, safe="/") for k, v in values.items()}

    def fill(m: re.Match[str]) -> str:
        if m.group(1) not in values:
            raise ConfigError(
                problem(f"unknown field {m.group(0)} in image_url", allowed="{path}, {relpath}, {file}, {id}")
            )
        return values[m.group(1)]

    return re.sub(r"\{([^{}]*)\}", fill, template)


def render_job(
    batch: Batch,
    images: Sequence[str],
    classes: Sequence[str],
    *,
    from_name: str = "label",
    to_name: str = "image",
) -> dict[str, str]:
    """The files of a labeling job, as ``{suffix: text}``: ``.csv`` and ``.labelstudio.json``.

    The CSV has columns ``sample_id, image, predicted, confidence, label``; annotators fill in
    ``label`` with a class name (an empty cell = not labeled yet). The JSON is a Label Studio task
    import: ``{"data": {"image", "sample_id", "round"}, "predictions": [...]}`` per sample, the
    proxy's class as a ``choices`` pre-annotation (none in round 1, before any proxy). The output
    is a pure function of the arguments, so a job can be re-written identically after a crash.
    """
    if len(images) != batch.ids.size:
        raise ConfigError(problem(f"{len(images)} image references for {batch.ids.size} ids", "one per id"))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["sample_id", "image", "predicted", "confidence", "label"])
    tasks = []
    for sid, img, pred, conf in zip(
        batch.ids.tolist(), images, batch.predicted.tolist(), batch.confidence, strict=True
    ):
        has = pred >= 0
        w.writerow([sid, img, classes[pred] if has else "", f"{conf:.4f}" if has else "", ""])
        task: dict[str, Any] = {"data": {"image": img, "sample_id": sid, "round": batch.round}}
        if has:
            task["predictions"] = [
                {
                    "model_version": f"alcore-proxy-round-{batch.round - 1}",
                    "score": round(float(conf), 4),
                    "result": [
                        {
                            "from_name": from_name,
                            "to_name": to_name,
                            "type": "choices",
                            "value": {"choices": [classes[pred]]},
                        }
                    ],
                }
            ]
        tasks.append(task)
    return {".csv": buf.getvalue(), ".labelstudio.json": json.dumps(tasks, indent=1) + "\n"}


def label_config_xml(classes: Sequence[str], *, from_name: str = "label", to_name: str = "image") -> str:
    """A Label Studio labeling config for single-choice image classification over ``classes``."""
    from xml.sax.saxutils import quoteattr

    choices = "\n".join(f"    <Choice value={quoteattr(c)}/>" for c in classes)
    return (
        f'<View>\n  <Image name="{to_name}" value="$image"/>\n'
        f'  <Choices name="{from_name}" toName="{to_name}" choice="single" showInline="true">\n'
        f"{choices}\n  </Choices>\n</View>\n"
    )


# ---------------------------------------------------------------- annotations in
@dataclass(frozen=True)
class AnnotationRow:
    """One answered (or unanswered) sample of an annotation file, as read, not yet validated.

    Attributes:
        index: 1-based record number (CSV: the spreadsheet row, header = row 1; JSON: the task).
        where: how a person finds it: ``"row 4"``, ``"task 3 (Label Studio id 17)"``.
        sample_id: the raw id (a string from CSV, anything from JSON).
        label: the class name given, or None when the row is not labeled yet.
        problem: what is malformed about the row itself, or None.
    """

    index: int
    where: str
    sample_id: Any
    label: str | None
    problem: str | None = None


def _decode(raw: bytes, name: str) -> str:
    if not raw.strip(b" \t\r\n\xef\xbb\xbf"):
        raise LabelImportError(
            problem(
                f"{name} is empty", allowed="a CSV with a header row, or a Label Studio JSON export", fix="export again"
            )
        )
    if b"\x00" in raw:
        at = raw.index(b"\x00")
        raise LabelImportError(
            problem(
                f"{name} holds a NUL byte at offset {at}: it is binary, or UTF-16",
                allowed="UTF-8 text",
                fix="save the file as UTF-8 (in Excel: 'CSV UTF-8')",
            )
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[: e.start].count(b"\n") + 1
        raise LabelImportError(
            problem(
                f"{name} is not UTF-8: byte 0x{raw[e.start]:02x} at offset {e.start} (line {line})",
                allowed="UTF-8 text, with or without a byte-order mark",
                fix="save the file as UTF-8 (in Excel: 'CSV UTF-8'; in LibreOffice: character set Unicode (UTF-8))",
            )
        ) from None


def _read_csv(text: str, name: str, from_name: str) -> list[AnnotationRow]:
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        records = list(reader)
    except csv.Error as e:
        raise LabelImportError(
            problem(f"{name} is not valid CSV at row {reader.line_num}: {e}", fix="export the sheet as CSV again")
        ) from None
    header = [h.strip().lower() for h in records[0]] if records else []
    id_col = next((c for c in ("sample_id", "id") if c in header), None)
    label_col = from_name.lower()
    if id_col is None or label_col not in header:
        raise LabelImportError(
            problem(
                f"{name}: the header row {records[0] if records else []!r} lacks "
                + " and ".join(
                    x
                    for x, ok in (("'sample_id' (or 'id')", id_col), (f"'{label_col}'", label_col in header))
                    if not ok
                ),
                allowed=f"a header row with columns sample_id (or id) and {label_col}, as in the exported batch CSV",
                fix="fill in the CSV that alcore exported, keeping its header",
            )
        )
    for col in (id_col, label_col):
        if header.count(col) > 1:
            raise LabelImportError(problem(f"{name}: column {col!r} appears {header.count(col)} times", "each once"))
    i_id, i_label = header.index(id_col), header.index(label_col)
    rows = []
    for n, rec in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in rec):
            continue  # a blank line
        sid = rec[i_id].strip() if i_id < len(rec) else ""
        label = rec[i_label].strip() if i_label < len(rec) else ""
        issue = None
        if len(rec) > len(header):
            issue = f"has {len(rec)} cells but the header {len(header)} (an unquoted comma?)"
        elif not sid and label:
            issue = "has a label but no sample id"
        rows.append(AnnotationRow(n, f"row {n}", sid, label or None, issue))
    return rows


def _answers(annotations: Any, from_name: str) -> tuple[str | None, str | None]:
    """The class the (non-cancelled) annotations of a Label Studio task give, and a problem."""
    if annotations is None:
        return None, None
    if not isinstance(annotations, list):
        return None, "'annotations' is not a list"
    given: list[str] = []
    other_names: set[str] = set()
    for a in annotations:
        if not isinstance(a, dict):
            return None, "an annotation is not a JSON object"
        if a.get("was_cancelled") is True:
            continue  # skipped by the annotator
        result = a.get("result", [])
        if not isinstance(result, list):
            return None, "an annotation's 'result' is not a list"
        for r in result:
            if not isinstance(r, dict) or r.get("type") != "choices":
                continue
            if r.get("from_name") != from_name:
                other_names.add(str(r.get("from_name")))
                continue
            value = r.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
                return None, f"an annotation has choices {choices!r}: one class name per image is allowed"
            given.append(choices[0].strip())
    if not given and other_names:
        return None, (
            f"its answers are under from_name {', '.join(sorted(map(repr, other_names)))}, not {from_name!r} "
            "(set labeling.from_name to the <Choices name=...> of the Label Studio project)"
        )
    if len(set(given)) > 1:
        return None, f"its annotators disagree ({', '.join(map(repr, given))}): resolve it in Label Studio"
    return (given[0] if given else None), None


def _read_json(text: str, name: str, from_name: str) -> list[AnnotationRow]:
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        raise LabelImportError(
            problem(f"{name} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}", fix="export it again")
        ) from None
    except (ValueError, RecursionError) as e:
        raise LabelImportError(problem(f"{name} cannot be read as JSON: {e}", fix="export it again")) from None
    if not isinstance(doc, list):
        raise LabelImportError(
            problem(
                f"{name} holds a JSON {type(doc).__name__}",
                allowed="a Label Studio export: a JSON list of tasks (format JSON or JSON-MIN)",
                fix="export the project from Label Studio as JSON",
            )
        )
    rows = []
    for n, task in enumerate(doc, start=1):
        where = f"task {n}"
        if not isinstance(task, dict):
            rows.append(AnnotationRow(n, where, None, None, "is not a JSON object"))
            continue
        if isinstance(task.get("id"), int) and not isinstance(task.get("id"), bool):
            where += f" (Label Studio id {task['id']})"
        if isinstance(task.get("data"), dict):  # the full JSON export
            sid = task["data"].get("sample_id")
            label, issue = _answers(task.get("annotations"), from_name)
        else:  # JSON-MIN: data fields and answers at the top level
            sid, value, issue, label = task.get("sample_id"), task.get(from_name), None, None
            if isinstance(value, dict):
                value = value.get("choices")
            if isinstance(value, list) and len(value) == 1:
                value = value[0]
            if isinstance(value, str):
                label = value.strip()
            elif value is not None:
                issue = f"has {from_name}={value!r}: one class name per image is allowed"
        if sid is None and label is not None and issue is None:
            issue = "has no sample_id (import the task JSON that alcore exported into Label Studio)"
        rows.append(AnnotationRow(n, where, sid, label or None, issue))
    return rows


def read_annotations(path: str | os.PathLike[str], *, from_name: str = "label") -> list[AnnotationRow]:
    """Read an annotation file: a CSV (the filled-in batch CSV, or Label Studio's CSV export) or a
    Label Studio JSON export (``JSON`` or ``JSON-MIN``). Rows without a label are returned with
    ``label=None`` (not labeled yet); predictions in a Label Studio export are never read as labels.

    Raises:
        LabelImportError: the file as a whole cannot be read (missing, too large, empty, not UTF-8,
            not CSV / JSON, no sample id or label column). Row-level problems are in the rows.
    """
    path = Path(path)
    name = path.name
    if path.suffix.lower() not in SUFFIXES:
        raise LabelImportError(
            problem(
                f"{name}: unsupported file type {path.suffix or '(none)'!r}",
                allowed="a .csv (the batch CSV, or a Label Studio CSV export) or a .json (Label Studio export)",
                fix="save or export the annotations as CSV or JSON",
            )
        )
    try:
        if path.is_symlink():
            raise LabelImportError(problem(f"{name} is a symbolic link", allowed="a regular file", fix="copy the file"))
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise LabelImportError(
                problem(f"{name} has {size} bytes", allowed=f"at most {MAX_FILE_BYTES} bytes", fix="split the file")
            )
        raw = path.read_bytes()
    except OSError as e:
        raise LabelImportError(problem(f"cannot read {name}: {e.strerror or e}")) from None
    text = _decode(raw, name)
    if path.suffix.lower() == ".csv":
        return _read_csv(text, name, from_name)
    return _read_json(text, name, from_name)


@dataclass
class ImportResult:
    """What an annotation file holds that can be committed, and what is wrong with the rest.

    Attributes:
        file: the file's name.
        ids, labels: ``(k,)`` int64 the valid new answers (not labeled before), in file order.
        already: answered rows whose id is committed already with the same label (no-ops).
        unanswered: rows without a label yet.
        problems: one line per invalid row, ``"row 4: ..."``, in file order.
    """

    file: str
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    already: int = 0
    unanswered: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        """All the problems in one message, with row numbers and the fix."""
        listed = self.problems[:MAX_LISTED]
        more = f"\n  ... and {len(self.problems) - MAX_LISTED} more" if len(self.problems) > MAX_LISTED else ""
        return problem(
            f"{self.file}: {len(self.problems)} row(s) not imported ({self.ids.size} new label(s) committed, "
            f"{self.already} committed before):\n  " + "\n  ".join(listed) + more + "\n",
            allowed="rows whose sample id is in an exported batch that awaits labels, with one class name "
            "(a class of the dataset), once per file, agreeing with labels committed before",
            fix="correct these rows and put the file in the inbox again (rows committed already are skipped, never paid twice)",
        )

    def raise_for_problems(self) -> None:
        if self.problems:
            raise LabelImportError(self.message())

    def to_record(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "committed": int(self.ids.size),
            "already": self.already,
            "unanswered": self.unanswered,
            "rejected": len(self.problems),
            "problems": self.problems[:MAX_LISTED],
        }


def parse_id(raw: Any) -> int | None:
    """A sample id as read from a file (an int, or a string of ASCII digits), or None."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int | np.integer):
        v = int(raw)
    elif isinstance(raw, str) and _INT.fullmatch(raw.strip()):
        v = int(raw.strip())
    else:
        return None
    return v if -(2**63) <= v < 2**63 else None


def check_annotations(
    rows: Iterable[AnnotationRow],
    *,
    labels: LabelState,
    requested: np.ndarray,
    classes: Sequence[str],
    file: str,
) -> ImportResult:
    """Validate annotation rows; the valid new answers are returned, every other row is a problem.

    A row is committed when its sample id parses, is in the pool, was asked for (``requested``) and
    is not labeled yet, and its label is one of ``classes``. An id labeled before with the *same*
    class is a no-op (re-importing a file is safe); with another class it is a conflict. An id given
    twice in the file with the same class counts once (the repeat is reported); with different
    classes none of its rows is committed. Unlabeled rows are skipped: a partly labeled file is fine.
    """
    index = {c: i for i, c in enumerate(classes)}
    asked = set(as_int_ids(requested, "requested", LabelError).tolist())
    problems: list[tuple[int, str]] = []
    by_id: dict[int, list[tuple[AnnotationRow, int]]] = {}
    res = ImportResult(file=file)
    shown = ", ".join(map(repr, classes[:12])) + (", ..." if len(classes) > 12 else "")
    for row in rows:
        if row.problem:
            problems.append((row.index, f"{row.where}: {row.problem}"))
            continue
        if row.label is None:
            res.unanswered += 1
            continue
        sid = parse_id(row.sample_id)
        if sid is None:
            problems.append((row.index, f"{row.where}: sample id {row.sample_id!r} is not an integer"))
            continue
        if not labels.contains(np.array([sid]))[0]:
            problems.append((row.index, f"{row.where}: unknown sample id {sid} (not in the pool)"))
            continue
        if row.label not in index:
            problems.append((row.index, f"{row.where}: label {row.label!r} is not a class (classes: {shown})"))
            continue
        by_id.setdefault(sid, []).append((row, index[row.label]))
    new_ids, new_labels = [], []
    for sid, entries in by_id.items():
        first, cls = entries[0]
        if len({c for _, c in entries}) > 1:
            given = ", ".join(f"{r.where}: {classes[c]!r}" for r, c in entries)
            problems += [
                (r.index, f"{r.where}: sample {sid} has conflicting labels in this file ({given})") for r, _ in entries
            ]
            continue
        problems += [(r.index, f"{r.where}: repeats {first.where} (sample {sid})") for r, _ in entries[1:]]
        rnd = int(labels.round_of(np.array([sid]))[0])
        if rnd:
            have = int(labels.labels_of(np.array([sid]))[0])
            if have == cls:
                res.already += 1
            else:
                problems.append(
                    (
                        first.index,
                        f"{first.where}: sample {sid} is labeled {classes[have]!r} already (round {rnd}); "
                        f"this row says {classes[cls]!r}",
                    )
                )
        elif sid not in asked:
            problems.append(
                (first.index, f"{first.where}: sample {sid} was not asked for (it is in no exported batch)")
            )
        else:
            new_ids.append(sid)
            new_labels.append(cls)
    res.ids = np.asarray(new_ids, dtype=np.int64)
    res.labels = np.asarray(new_labels, dtype=np.int64)
    res.problems = [msg for _, msg in sorted(problems, key=lambda p: p[0])]
    return res


def import_annotations(
    path: str | os.PathLike[str],
    *,
    labels: LabelState,
    requested: np.ndarray,
    classes: Sequence[str],
    from_name: str = "label",
) -> ImportResult:
    """:func:`read_annotations` then :func:`check_annotations`: what a file would commit. Commits nothing.

    Raises:
        LabelImportError: the file as a whole cannot be read.
    """
    rows = read_annotations(path, from_name=from_name)
    return check_annotations(rows, labels=labels, requested=requested, classes=classes, file=Path(path).name)


# ---------------------------------------------------------------- the inbox
def inbox_files(inbox: str | os.PathLike[str]) -> list[Path]:
    """Files waiting in ``inbox`` (not in sub-folders), oldest first. Names starting with ``.``
    or ending in ``.tmp`` / ``.part`` / ``~`` are skipped: a file being copied in is not read."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    out = []
    for p in inbox.iterdir():
        n = p.name
        if n.startswith(".") or n.endswith((".tmp", ".part", "~")) or p.is_dir():
            continue
        out.append(p)
    return sorted(out, key=lambda p: (p.lstat().st_mtime_ns, p.name))


def _move_done(path: Path, done: Path, sha: str, report: str | None) -> Path:
    """Move a processed file to ``done/`` (after its labels are committed), with its report."""
    done.mkdir(parents=True, exist_ok=True)
    dest = done / f"{time.strftime('%Y%m%d-%H%M%S')}-{sha[:8]}-{path.name}"
    if report:
        write_text_atomic(dest.with_name(dest.name + ".problems.txt"), report + "\n")
    os.replace(path, dest)
    return dest


def ingest_inbox(
    state_path: str | os.PathLike[str],
    inbox: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    from_name: str = "label",
) -> list[dict[str, Any]]:
    """Commit the valid annotations of every file in ``inbox`` to the experiment state.

    Per file, in order: read and validate it against the state as saved; commit the valid new
    labels to the label state and the cost ledger (in the open batch's round; the ledger pays only
    for labels committed now) and record the import, in **one** atomic write of the state; then
    move the file to ``inbox/done/`` (with ``<name>.problems.txt`` when rows were refused).

    Killed anywhere, a file is either still in the inbox (and is read again: its committed rows are
    no-ops) or moved after its labels were saved. Nothing is lost, nothing is paid twice.

    Returns:
        One record per file: ``file``, ``committed``, ``already``, ``unanswered``, ``rejected``,
        ``problems`` (at most :data:`MAX_LISTED`), ``message`` (all problems; None when clean),
        ``sha256``, ``round``, ``moved_to``.
    """
    inbox = Path(inbox)
    records = []
    for path in inbox_files(inbox):
        try:
            sha = hashlib.sha256(path.read_bytes() if path.is_file() and not path.is_symlink() else b"").hexdigest()
        except OSError:
            sha = hashlib.sha256(b"").hexdigest()
        st = ExperimentState.load(state_path)
        batch = st.labeling.open_batch
        try:
            requested = st.labeling.requested_ids(st.labels)
            res = import_annotations(path, labels=st.labels, requested=requested, classes=classes, from_name=from_name)
            message = res.message() if res.problems else None
        except LabelImportError as e:
            res, message = ImportResult(file=path.name, problems=[str(e)]), str(e)
        rnd = batch.round if batch is not None else 0
        if res.ids.size:
            st.commit_answers(rnd, res.ids, res.labels)
        record = {**res.to_record(), "sha256": sha, "round": rnd, "at": time.strftime("%Y-%m-%dT%H:%M:%S")}
        st.labeling.imports.append(record)
        st.save(state_path)
        dest = _move_done(path, inbox / "done", sha, message)
        records.append({**record, "message": message, "moved_to": str(dest)})
    return records
