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
  crash anywhere loses nothing and pays nothing twice; another value is a correction (kept with
  its history, in its round, never paid again).

Nothing read from an annotation file is ever used as a path or unpickled: only sample ids and
class names are taken from it.
"""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import json
import os
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from alcore import monitor
from alcore._io import stat_signature, write_text_atomic
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


#: Image files in these formats and up to this size are embedded as they are; others are scaled down.
_MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "GIF": "image/gif", "WEBP": "image/webp"}
EMBED_AS_IS_BYTES = 128 << 10


def image_data_uri(path: str | os.PathLike[str], *, max_side: int, scaled: str | os.PathLike[str]) -> str:
    """The image file ``path`` as a ``data:`` URI, which a stock Label Studio displays with no
    set-up (no file serving, no storage; Label Studio supports base64 images in task data).

    A PNG, JPEG, GIF or WebP file of at most :data:`EMBED_AS_IS_BYTES` whose sides are at most
    ``max_side`` is embedded byte for byte; any other image is scaled so that its longest side is
    ``max_side`` and saved once as ``scaled`` (a JPEG), which is embedded (so a job is re-rendered without decoding the image again).

    Raises:
        DataError: the file cannot be read as an image (named, as the dataset names it).
    """
    from PIL import Image

    from alcore._io import atomic_path
    from alcore.datasets.image_folder import image_error, image_errors

    path, scaled = Path(path), Path(scaled)
    try:
        if not scaled.is_file():
            with Image.open(path) as im:
                fmt, size = im.format, im.size
                small = max(size) <= max_side and path.stat().st_size <= EMBED_AS_IS_BYTES
                if fmt in _MIME and small:
                    return f"data:{_MIME[fmt]};base64," + base64.b64encode(path.read_bytes()).decode("ascii")
                im.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
                with atomic_path(scaled) as tmp:
                    im.convert("RGB").save(tmp, format="JPEG", quality=90)
        return "data:image/jpeg;base64," + base64.b64encode(scaled.read_bytes()).decode("ascii")
    except image_errors() as e:
        raise image_error(path, e) from e


def render_job(
    batch: Batch,
    images: Sequence[str],
    classes: Sequence[str],
    *,
    from_name: str = "label",
    to_name: str = "image",
    files: Sequence[str] | None = None,
) -> dict[str, str]:
    """The files of a labeling job, as ``{suffix: text}``: ``.csv`` and ``.labelstudio.json``.

    The CSV has columns ``sample_id, image, predicted, confidence, label`` (and ``audit``, "yes" on
    the accuracy audit's rows, when the batch has any: labeled the same way, never trained on, shown
    without a guess so that the answers stay unbiased); annotators fill in
    ``label`` with a class name (an empty cell = not labeled yet); its ``image`` column shows
    ``files`` (the image files, for people) when given, else ``images``. The JSON is a Label Studio
    task import: ``{"data": {"image", "sample_id", "round"}, "predictions": [...]}`` per sample,
    ``image`` from ``images`` (a URL or a data: URI), the proxy's class as a ``choices``
    pre-annotation (none in round 1, before any proxy). The output is a pure function of the
    arguments, so a job can be re-written identically after a crash.
    """
    if len(images) != batch.ids.size or (files is not None and len(files) != batch.ids.size):
        raise ConfigError(problem(f"{len(images)} image references for {batch.ids.size} ids", "one per id"))
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    marked = bool(batch.audit.any())  # the audit's rows: an "audit" column, and no guess shown
    w.writerow(["sample_id", "image", "predicted", "confidence", "label"] + (["audit"] if marked else []))
    tasks = []
    shown = images if files is None else files
    for sid, img, pred, conf, file, audit in zip(
        batch.ids.tolist(), images, batch.predicted.tolist(), batch.confidence, shown, batch.audit, strict=True
    ):
        has = pred >= 0
        row = [sid, file, classes[pred] if has else "", f"{conf:.4f}" if has else "", ""]
        w.writerow(row + (["yes" if audit else ""] if marked else []))
        task: dict[str, Any] = {"data": {"image": img, "sample_id": sid, "round": batch.round}}
        if audit:
            task["data"]["audit"] = True
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
        annotation_id: Label Studio's annotation id when the file has one (``labeling.conflicts:
            first`` takes the earliest annotation); a task answered by two annotators gives two rows.
    """

    index: int
    where: str
    sample_id: Any
    label: str | None
    problem: str | None = None
    annotation_id: int | None = None


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
    i_ann = header.index("annotation_id") if header.count("annotation_id") == 1 else None
    rows = []
    for n, rec in enumerate(records[1:], start=2):
        if not any(cell.strip() for cell in rec):
            continue  # a blank line
        sid = rec[i_id].strip() if i_id < len(rec) else ""
        label = rec[i_label].strip() if i_label < len(rec) else ""
        ann = parse_id(rec[i_ann]) if i_ann is not None and i_ann < len(rec) else None
        issue = None
        if len(rec) > len(header):
            issue = f"has {len(rec)} cells but the header {len(header)} (an unquoted comma?)"
        elif not sid and label:
            issue = "has a label but no sample id"
        rows.append(AnnotationRow(n, f"row {n}", sid, label or None, issue, ann))
    return rows


def _answers(annotations: Any, from_name: str) -> tuple[list[tuple[str, int | None]], str | None]:
    """Each (non-cancelled) annotation of a Label Studio task as ``(class name, annotation id)``,
    in the file's order, or a problem with the task as a whole."""
    if annotations is None:
        return [], None
    if not isinstance(annotations, list):
        return [], "'annotations' is not a list"
    given: list[tuple[str, int | None]] = []
    other_names: set[str] = set()
    for a in annotations:
        if not isinstance(a, dict):
            return [], "an annotation is not a JSON object"
        if a.get("was_cancelled") is True:
            continue  # skipped by the annotator
        result = a.get("result", [])
        if not isinstance(result, list):
            return [], "an annotation's 'result' is not a list"
        for r in result:
            if not isinstance(r, dict) or r.get("type") != "choices":
                continue
            if r.get("from_name") != from_name:
                other_names.add(str(r.get("from_name")))
                continue
            value = r.get("value")
            choices = value.get("choices") if isinstance(value, dict) else None
            if not isinstance(choices, list) or len(choices) != 1 or not isinstance(choices[0], str):
                return [], f"an annotation has choices {choices!r}: one class name per image is allowed"
            given.append((choices[0].strip(), parse_id(a.get("id"))))
    if not given and other_names:
        return [], (
            f"its answers are under from_name {', '.join(sorted(map(repr, other_names)))}, not {from_name!r} "
            "(set labeling.from_name to the <Choices name=...> of the Label Studio project)"
        )
    return given, None


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
        if isinstance(task.get("data"), dict):  # the full JSON export: a task and its annotations
            sid = task["data"].get("sample_id")
            given, issue = _answers(task.get("annotations"), from_name)
            if sid is None and given and issue is None:
                issue = "has no sample_id (import the task JSON that alcore exported into Label Studio)"
            if issue is not None or not given:
                rows.append(AnnotationRow(n, where, sid, None, issue))
                continue
            for label, ann in given:
                at = where if len(given) == 1 else f"{where}, annotation {ann}"
                rows.append(AnnotationRow(n, at, sid, label or None, None, ann))
            continue
        # JSON-MIN: one record per annotation, data fields and answers at the top level
        sid, value, issue, label = task.get("sample_id"), task.get(from_name), None, None
        ann = parse_id(task.get("annotation_id"))
        if ann is not None:
            where += f", annotation {ann}"
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
        rows.append(AnnotationRow(n, where, sid, label or None, issue, ann))
    return rows


def read_file_bounded(path: str | os.PathLike[str]) -> tuple[bytes, os.stat_result]:
    """The bytes of an annotation file, and its status as read.

    Opened without following a symbolic link and without blocking (a FIFO or a device is refused
    by its type, never read); its size is checked before a byte is read (a 1 GiB sparse file
    costs nothing), and at most :data:`MAX_FILE_BYTES` + 1 bytes are read in any case.

    Raises:
        LabelImportError: a link, not a regular file, too large, or unreadable.
    """
    import errno
    import stat

    path = Path(path)
    name = path.name
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise LabelImportError(
                problem(f"{name} is a symbolic link", allowed="a regular file", fix="copy the file")
            ) from None
        if e.errno == errno.ENXIO:  # a socket
            raise LabelImportError(
                problem(f"{name} is a socket", allowed="a regular file", fix="copy the file")
            ) from None
        raise LabelImportError(problem(f"cannot read {name}: {e.strerror or e}")) from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = {
                stat.S_IFIFO: "a named pipe (FIFO)",
                stat.S_IFCHR: "a character device",
                stat.S_IFBLK: "a block device",
                stat.S_IFDIR: "a folder",
            }.get(stat.S_IFMT(st.st_mode), "not a regular file")
            raise LabelImportError(
                problem(f"{name} is {kind}", allowed="a regular file", fix="save the annotations as a file")
            )
        if st.st_size > MAX_FILE_BYTES:
            raise LabelImportError(
                problem(
                    f"{name} has {st.st_size} bytes", allowed=f"at most {MAX_FILE_BYTES} bytes", fix="split the file"
                )
            )
        chunks, left = [], MAX_FILE_BYTES + 1
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        raw = b"".join(chunks)
        if len(raw) > MAX_FILE_BYTES:
            raise LabelImportError(
                problem(f"{name} grew beyond {MAX_FILE_BYTES} bytes while it was read", fix="split the file")
            )
        return raw, st
    except OSError as e:
        raise LabelImportError(problem(f"cannot read {name}: {e.strerror or e}")) from None
    finally:
        os.close(fd)


def _file_type(name: str) -> str:
    suffix = Path(name).suffix.lower()
    if suffix not in SUFFIXES:
        raise LabelImportError(
            problem(
                f"{name}: unsupported file type {suffix or '(none)'!r}",
                allowed="a .csv (the batch CSV, or a Label Studio CSV export) or a .json (Label Studio export)",
                fix="save or export the annotations as CSV or JSON",
            )
        )
    return suffix


def parse_annotations(raw: bytes, name: str, *, from_name: str = "label") -> list[AnnotationRow]:
    """The rows of an annotation file's bytes (``name`` gives the type, ``.csv`` or ``.json``)."""
    suffix = _file_type(name)
    text = _decode(raw, name)
    if suffix == ".csv":
        return _read_csv(text, name, from_name)
    return _read_json(text, name, from_name)


def read_annotations(path: str | os.PathLike[str], *, from_name: str = "label") -> list[AnnotationRow]:
    """Read an annotation file: a CSV (the filled-in batch CSV, or Label Studio's CSV export) or a
    Label Studio JSON export (``JSON`` or ``JSON-MIN``). Rows without a label are returned with
    ``label=None`` (not labeled yet); predictions in a Label Studio export are never read as labels.
    A task answered by several annotators gives one row per annotation.

    Raises:
        LabelImportError: the file as a whole cannot be read (missing, a link or a pipe, too large,
            empty, not UTF-8, not CSV / JSON, no sample id or label column). Row-level problems are
            in the rows.
    """
    path = Path(path)
    _file_type(path.name)
    raw, _ = read_file_bounded(path)
    return parse_annotations(raw, path.name, from_name=from_name)


#: ``labeling.conflicts``: what to do when annotators give one sample different classes.
CONFLICT_POLICIES = ("refuse", "majority", "first")


@dataclass
class ImportResult:
    """What an annotation file holds that can be committed, and what is wrong with the rest.

    Attributes:
        file: the file's name.
        ids, labels: ``(k,)`` int64 the valid new answers (not labeled before), in file order.
        fixed_ids, fixed_labels: ``(m,)`` int64 corrections: labeled samples the file gives another
            class (a reviewer fixed them); their rounds are kept and they are not paid again.
        already: answered samples committed already with the same label (no-ops).
        unanswered: rows without a label yet.
        problems: one line per invalid row, ``"row 4: ..."``, in file order.
        conflicts: annotators who disagreed and how ``labeling.conflicts`` settled it, one line each.
        corrections: one line per correction, ``"row 4: sample 17 corrected from 'cat' to 'dog' ..."``.
    """

    file: str
    ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fixed_ids: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    fixed_labels: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    already: int = 0
    unanswered: int = 0
    problems: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)
    corrections: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def message(self) -> str:
        """All the problems in one message, with row numbers and the fix."""
        listed = self.problems[:MAX_LISTED]
        more = f"\n  ... and {len(self.problems) - MAX_LISTED} more" if len(self.problems) > MAX_LISTED else ""
        return problem(
            f"{self.file}: {len(self.problems)} row(s) not imported ({self.ids.size} new label(s) committed, "
            f"{self.fixed_ids.size} corrected, {self.already} committed before):\n  "
            + "\n  ".join(listed)
            + more
            + "\n",
            allowed="rows whose sample id is in an exported batch, with one class name (a class of the dataset); "
            "annotators who disagree are settled by labeling.conflicts (refuse, majority or first)",
            fix="correct these rows and put the file in the inbox again (rows committed already are skipped, never paid twice)",
        )

    def raise_for_problems(self) -> None:
        if self.problems:
            raise LabelImportError(self.message())

    def to_record(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "committed": int(self.ids.size),
            "corrected": int(self.fixed_ids.size),
            "already": self.already,
            "unanswered": self.unanswered,
            "rejected": len(self.problems),
            "problems": self.problems[:MAX_LISTED],
            "conflicts": self.conflicts[:MAX_LISTED],
            "corrections": self.corrections[:MAX_LISTED],
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


def _settle(
    sid: int, entries: list[tuple[AnnotationRow, int]], classes: Sequence[str], policy: str
) -> tuple[int | None, str]:
    """One class for a sample that several rows answer, under ``policy``, and what was done."""
    given = ", ".join(f"{r.where}: {classes[c]!r}" for r, c in entries)
    if policy == "majority":
        counts: dict[int, int] = {}
        for _, c in entries:
            counts[c] = counts.get(c, 0) + 1
        top = max(counts.values())
        winners = [c for c, k in counts.items() if k == top]
        if len(winners) == 1:
            return winners[
                0
            ], f"sample {sid}: annotators disagree ({given}); took {classes[winners[0]]!r}, the majority"
        return None, f"sample {sid}: annotators disagree ({given}) with no majority (labeling.conflicts=majority)"
    if policy == "first":
        # the earliest annotation: Label Studio's annotation ids grow with time (its exports list a
        # task's newest annotation first); without ids, the first row of the file
        first = min(entries, key=lambda e: (e[0].annotation_id is None, e[0].annotation_id or 0, e[0].index))
        return first[1], f"sample {sid}: annotators disagree ({given}); took {classes[first[1]]!r}, the first answer"
    return None, (
        f"sample {sid}: annotators disagree ({given}): resolve it in Label Studio, or set labeling.conflicts "
        "to majority or first"
    )


def check_annotations(
    rows: Iterable[AnnotationRow],
    *,
    labels: LabelState,
    requested: np.ndarray,
    classes: Sequence[str],
    file: str,
    conflicts: str = "refuse",
    seen_before: bool = False,
) -> ImportResult:
    """Validate annotation rows; the valid new answers and corrections are returned, every other
    row is a problem.

    A row is committed when its sample id parses, is in the pool, was asked for (``requested``) and
    is not labeled yet, and its label is one of ``classes``. Rows that give one sample the same class
    (annotators who agree, a repeated row) count once. Rows that disagree are settled by
    ``conflicts`` (:data:`CONFLICT_POLICIES`): ``refuse`` commits nothing for the sample and
    reports it, ``majority`` takes the most given class (a tie is refused), ``first`` the earliest
    answer; every settled conflict is reported too. A sample labeled before with the *same* class
    is a no-op (re-importing a file is safe); with another class it is a **correction** (a reviewer
    fixed it): the new class replaces the old one in the same round, and it is not paid again.
    A file imported before (``seen_before``: the same bytes) never corrects: an old file dropped
    again must not undo a later fix. Unlabeled rows are skipped: a partly labeled file is fine.
    """
    if conflicts not in CONFLICT_POLICIES:
        raise ConfigError(problem(f"labeling.conflicts={conflicts!r}", allowed=", ".join(CONFLICT_POLICIES)))
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
    new_ids, new_labels, fixed_ids, fixed_labels = [], [], [], []
    for sid, entries in by_id.items():
        first, cls = entries[0]
        if len({c for _, c in entries}) > 1:
            settled, note = _settle(sid, entries, classes, conflicts)
            if settled is None:
                problems += [(r.index, f"{r.where}: {note}") for r, _ in entries]
                continue
            cls = settled
            res.conflicts.append(f"{first.where}: {note}")
        rnd = int(labels.round_of(np.array([sid]))[0])
        if rnd:
            have = int(labels.labels_of(np.array([sid]))[0])
            if have == cls:
                res.already += 1
            elif seen_before:
                problems.append(
                    (
                        first.index,
                        f"{first.where}: sample {sid} says {classes[cls]!r}, but it was corrected to {classes[have]!r} "
                        "after this file was imported: an old file does not undo a correction",
                    )
                )
            else:
                fixed_ids.append(sid)
                fixed_labels.append(cls)
                res.corrections.append(
                    f"{first.where}: sample {sid} corrected from {classes[have]!r} to {classes[cls]!r} "
                    f"(labeled in round {rnd}, which it keeps; not paid again)"
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
    res.fixed_ids = np.asarray(fixed_ids, dtype=np.int64)
    res.fixed_labels = np.asarray(fixed_labels, dtype=np.int64)
    res.problems = [msg for _, msg in sorted(problems, key=lambda p: p[0])]
    return res


def import_annotations(
    path: str | os.PathLike[str],
    *,
    labels: LabelState,
    requested: np.ndarray,
    classes: Sequence[str],
    from_name: str = "label",
    conflicts: str = "refuse",
) -> ImportResult:
    """:func:`read_annotations` then :func:`check_annotations`: what a file would commit. Commits nothing.

    Raises:
        LabelImportError: the file as a whole cannot be read.
    """
    rows = read_annotations(path, from_name=from_name)
    return check_annotations(
        rows, labels=labels, requested=requested, classes=classes, file=Path(path).name, conflicts=conflicts
    )


# ---------------------------------------------------------------- the inbox
#: Names of files being copied in, never read: hidden, and these endings.
PARTIAL_ENDINGS = (".tmp", ".part", ".partial", ".crdownload", ".download", "~")
#: File names in done/ stay within this many bytes (most file systems allow 255), leaving room
#: for the ``.problems.txt`` beside them.
_DONE_NAME_BYTES = 255 - len(".problems.txt")


def inbox_files(inbox: str | os.PathLike[str]) -> list[Path]:
    """Entries waiting in ``inbox`` (not sub-folders), oldest first. Names starting with ``.`` or
    ending in ``.tmp`` / ``.part`` / ``.partial`` / ``.crdownload`` / ``~`` are skipped: a file being
    copied in is not read. Links, pipes and the like are listed (and refused when read)."""
    inbox = Path(inbox)
    if not inbox.is_dir():
        return []
    out = []
    for p in inbox.iterdir():
        n = p.name
        try:
            st = p.lstat()
        except OSError:
            continue  # gone meanwhile
        if n.startswith(".") or n.endswith(PARTIAL_ENDINGS) or (st.st_mode & 0o170000) == 0o040000:
            continue
        out.append((st.st_mtime_ns, n, p))
    return [p for _, _, p in sorted(out)]


def _unchanged(path: Path, st: os.stat_result) -> bool:
    try:
        return stat_signature(path.lstat()) == stat_signature(st)
    except OSError:
        return False


def _done_name(name: str, stamp: str, sha: str) -> str:
    """``<stamp>-<sha8>-<name>`` within :data:`_DONE_NAME_BYTES` bytes (a long name is shortened,
    its extension kept)."""
    head = f"{stamp}-{sha[:8]}-"
    room = _DONE_NAME_BYTES - len(head.encode())
    if len(name.encode()) <= room:
        return head + name
    suffix = Path(name).suffix if len(Path(name).suffix.encode()) < 16 else ""
    stem = name[: len(name) - len(suffix)].encode()[: room - len(suffix.encode()) - 1]
    return head + stem.decode("utf-8", errors="ignore") + "~" + suffix


def _open_done(inbox: Path) -> int:
    """A file descriptor of ``inbox/done/`` (created if missing) that is a real folder inside the
    inbox: a ``done`` that is a symbolic link (or a file) is refused before anything is committed,
    so processed files are never moved out of the inbox."""
    import errno

    done = inbox / "done"
    fd_in = os.open(inbox, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        try:
            os.mkdir("done", dir_fd=fd_in)
        except FileExistsError:
            pass
        try:
            return os.open("done", os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd_in)
        except OSError as e:
            if e.errno not in (errno.ELOOP, errno.ENOTDIR):
                raise
            what = f"a symbolic link to {os.readlink(done)}" if done.is_symlink() else "not a folder"
            raise LabelImportError(
                problem(
                    f"{done} is {what}",
                    allowed="a real folder inside the inbox: processed annotation files are moved there and nowhere else",
                    fix=f"remove it (rm {done}); the next cycle creates the folder",
                )
            ) from None
    finally:
        os.close(fd_in)


def _move_done(path: Path, done: Path, sha: str, report: str | None) -> Path:
    """Move a processed file to ``done/`` (after its labels are committed), with its report.
    ``done`` was checked by :func:`_open_done`; the move goes through folder descriptors, so a
    ``done`` swapped for a link meanwhile is refused, never followed."""
    fd_done = _open_done(path.parent)
    fd_in = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        dest = _done_name(path.name, stamp, sha)
        for k in range(2, 1000):
            try:
                os.stat(dest, dir_fd=fd_done, follow_symlinks=False)
            except FileNotFoundError:
                break
            dest = _done_name(path.name, f"{stamp}.{k}", sha)
        if report:
            write_text_atomic(done / (dest + ".problems.txt"), report + "\n")
        os.replace(path.name, dest, src_dir_fd=fd_in, dst_dir_fd=fd_done)
        return done / dest
    finally:
        os.close(fd_in)
        os.close(fd_done)


def _wait_to_settle(files: list[Path], settle_seconds: float) -> tuple[dict[Path, os.stat_result], list[Path]]:
    """Stat ``files``; when one was modified less than ``settle_seconds`` ago, wait until it is that
    old and stat again. Returns the status of the files that stayed unchanged, and those that
    changed (or vanished) meanwhile: still being written."""
    stats: dict[Path, os.stat_result] = {}
    for f in files:
        try:
            stats[f] = f.lstat()
        except OSError:
            continue
    if not stats or settle_seconds <= 0:
        return stats, []
    youngest = max(st.st_mtime for st in stats.values())
    wait = min(settle_seconds, settle_seconds - (time.time() - youngest))
    if wait <= 0:
        return stats, []
    time.sleep(wait)
    growing = [f for f, st in stats.items() if not _unchanged(f, st)]
    return {f: st for f, st in stats.items() if f not in growing}, growing


def describe_import(rec: Mapping[str, Any]) -> str:
    """One line on what a record of :func:`ingest_inbox` did, for logs and the command line."""
    if rec.get("skipped"):
        return f"{rec['file']}: not read yet ({rec['skipped']})"
    line = (
        f"imported {rec['file']}: {rec['committed']} new label(s), {rec.get('corrected', 0)} corrected, "
        f"{rec['already']} known, {rec['rejected']} refused"
    )
    if rec.get("conflicts"):
        line += f", {len(rec['conflicts'])} disagreement(s) settled"
    if rec.get("left"):
        line += f"; {rec['left']}"
    return line


def ingest_inbox(
    state_path: str | os.PathLike[str],
    inbox: str | os.PathLike[str],
    *,
    classes: Sequence[str],
    from_name: str = "label",
    conflicts: str = "refuse",
    settle_seconds: float = 5.0,
) -> list[dict[str, Any]]:
    """Commit the valid annotations of every file in ``inbox`` to the experiment state.

    Per file, in order: read it whole (a file modified less than ``settle_seconds`` ago is waited
    for; one that changes meanwhile, or while it is read, is left for the next cycle), validate it
    against the state as saved; commit the valid new labels to the label state and the cost ledger
    (in the open batch's round; the ledger pays only for labels committed now), apply corrections
    (the label changes, its round stays, nothing is paid; recorded in ``labeling.corrections``), and
    record the import, in **one** atomic write of the state; then move the file to ``inbox/done/``
    (with ``<name>.problems.txt`` when rows were refused), unless it changed since it was read.

    Killed anywhere, a file is either still in the inbox (and is read again: its committed rows are
    no-ops) or moved after its labels were saved. Nothing is lost, nothing is paid twice. A file
    that cannot be moved (a full disk, permissions) stays in the inbox, and is reported.

    Returns:
        One record per file: ``file``, ``committed``, ``corrected``, ``already``, ``unanswered``,
        ``rejected``, ``problems``, ``conflicts``, ``corrections`` (each at most :data:`MAX_LISTED`),
        ``message`` (all problems; None when clean), ``sha256``, ``round``, ``moved_to`` (None when
        it stayed), ``left`` (why it stayed) - or, for a file not read yet, ``file`` and ``skipped``.

    Raises:
        LabelImportError: ``inbox/done`` is a link or a file (before anything is committed).
    """
    inbox = Path(inbox)
    files = inbox_files(inbox)
    if not files:
        return []
    os.close(_open_done(inbox))
    stats, growing = _wait_to_settle(files, settle_seconds)
    records: list[dict[str, Any]] = [
        {"file": f.name, "skipped": "it changed a moment ago: still being written? the next cycle reads it"}
        for f in growing
    ]
    for path in files:
        if path not in stats:
            continue
        seen = stats[path]
        try:
            raw, seen = read_file_bounded(path)
            failure = None
        except LabelImportError as e:
            raw, failure = b"", e
        if not _unchanged(path, seen):
            records.append({"file": path.name, "skipped": "it changed while it was read: the next cycle reads it"})
            continue
        sha = hashlib.sha256(raw).hexdigest()
        st = ExperimentState.load(state_path)
        batch = st.labeling.open_batch
        try:
            if failure is not None:
                raise failure
            requested = st.requested_ids()
            res = check_annotations(
                parse_annotations(raw, path.name, from_name=from_name),
                labels=st.answer_view(),  # audit answers are checked like the others, kept apart below
                requested=requested,
                classes=classes,
                file=path.name,
                conflicts=conflicts,
                seen_before=any(r.get("sha256") == sha for r in st.labeling.imports),
            )
            message = res.message() if res.problems else None
        except LabelImportError as e:
            res, message = ImportResult(file=path.name, problems=[str(e)]), str(e)
        rnd = batch.round if batch is not None else 0
        at = time.strftime("%Y-%m-%dT%H:%M:%S")
        audit = st.is_audit(res.ids)
        if res.ids[~audit].size:
            st.commit_answers(rnd, res.ids[~audit], res.labels[~audit])
        monitor.record_audit(st, rnd, res.ids[audit], res.labels[audit])  # paid as audit labels, never trained on
        audit = st.is_audit(res.fixed_ids)
        for part, (ids, labels) in enumerate(
            ((res.fixed_ids[~audit], res.fixed_labels[~audit]), (res.fixed_ids[audit], res.fixed_labels[audit]))
        ):
            if not ids.size:
                continue
            before = st.labels.relabel(ids, labels) if part == 0 else st.audit.relabel(ids, labels)
            rounds = st.labels.round_of(ids) if part == 0 else np.zeros(ids.size, dtype=np.int64)
            st.labeling.record_corrections(ids, before, labels, rounds, file=path.name, sha256=sha, at=at)
        record = {**res.to_record(), "sha256": sha, "round": rnd, "at": at}
        st.labeling.imports.append(record)
        st.save(state_path)
        dest, left = None, None
        if not _unchanged(path, seen):
            left = "it changed after it was read: it stays in the inbox and the next cycle reads it again"
        else:
            try:
                dest = str(_move_done(path, inbox / "done", sha, message))
            except (OSError, LabelImportError) as e:
                left = (
                    f"it could not be moved to done/ ({e}); it stays in the inbox "
                    "(reading it again commits nothing twice)"
                )
        records.append({**record, "message": message, "moved_to": dest, "left": left})
    return records


def label_studio_setup(
    *,
    image_url: str,
    image_root: str | None,
    embed_max_side: int,
    outbox: Path,
    inbox: Path,
    settle_seconds: float,
) -> str:
    """What a person does to label a job in Label Studio with these ``labeling`` settings: the
    exact set-up for the way images are referenced, then import, label, export, drop in the inbox."""
    job = outbox / "batch-0001.labelstudio.json"
    steps = [f"Label Studio set-up for image_url={image_url!r}", ""]
    start = "label-studio start --internal-host 127.0.0.1 -p 8080"
    project = (
        f"Create a project; Settings > Labeling Interface > Code: paste {outbox / 'label-config.xml'}",
        f"Import the open batch's tasks, e.g. {job} (Import > Upload Files)",
    )
    if image_url == "{data}":
        steps += [
            "The images are inside the tasks (data: URIs): a stock Label Studio shows them, nothing to serve.",
            f"Images larger than {embed_max_side} px are embedded scaled down (labeling.embed_max_side); "
            "a Label Studio export carries them too, and an export over 64 MiB is refused: for many large "
            "images serve the files instead (image_url: /data/local-files/?d={relpath}, see below).",
            "",
            f"1. {start}",
            f"2. {project[0]}",
            f"3. {project[1]}",
        ]
        n = 4
    elif "{relpath}" in image_url and image_url.startswith("/data/local-files/"):
        root = image_root or "<labeling.image_root>"
        steps += [
            "Label Studio serves the files itself: that takes two environment variables and a storage.",
            "",
            f"1. LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED=true LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT={root} \\",
            f"     {start}",
            f"2. {project[0]}",
            f"3. Settings > Cloud Storage > Add Source Storage > Local files: Absolute local path {root}; "
            "leave 'Treat every bucket object as a source file' off; Add Storage (no Sync: the tasks name the files)",
            f"4. {project[1]}",
        ]
        if outbox / "images" != Path(root):
            steps.append(
                f"   (images of in-memory datasets are written to {outbox / 'images'}: image_root must hold them)"
            )
        n = 5
    elif "://" in image_url:
        steps += [
            "Label Studio's page loads each image from that URL in the annotator's browser: serve the files",
            "there yourself, over the same scheme as Label Studio (http/https), with CORS open to it.",
            "",
            f"1. {start}",
            f"2. {project[0]}",
            f"3. {project[1]}",
        ]
        n = 4
    else:
        steps += [
            "Warning: this names files on this machine, and Label Studio loads images by URL: every task will",
            "say 'There was an issue loading URL from $image value'. Use image_url: '{data}' (the default: the",
            "images travel inside the tasks), or /data/local-files/?d={relpath} with labeling.image_root.",
            "",
        ]
        n = 1
    steps += [
        f"{n}. Label. Then Export (JSON, JSON-MIN or CSV) and save the file in {inbox}",
        f"   (copy it in under a name ending in .part and rename it, or let it sit: a file changed less than "
        f"{settle_seconds:g} s ago is waited for).",
        f"{n + 1}. alcore label cycle (or alcore serve): new labels are committed, corrections applied, the next "
        "batch exported. Exporting everything each time is fine: what is known already is skipped, never paid twice.",
    ]
    return "\n".join(steps)
