"""Planning a sync from the commit's data files and the split's recorded layout (plain code, no database)."""

from __future__ import annotations

from collections.abc import Callable

from hf_ingest.jobstore.model import RowMove, SplitLayout
from hf_ingest.sync_plan import DataFile, plan_sync, sized_files

FP = "f" * 32


def _files(*spec: tuple[str, str, int]) -> list[DataFile]:
    files, first = [], 0
    for name, content, rows in spec:
        files.append(DataFile(name, content, rows, first))
        first += rows
    return files


def _recorded(files: list[DataFile], fingerprint: str = FP) -> SplitLayout:
    return plan_sync(files, None, fingerprint, "1" * 40).completed()[0]


FOUR = _files(("t-0-of-4", "a", 100), ("t-1-of-4", "b", 100), ("t-2-of-4", "c", 100), ("t-3-of-4", "d", 100))


def test_a_first_import_reads_every_file_and_records_them() -> None:
    plan = plan_sync(FOUR, None, FP, "1" * 40)
    assert plan.read == ((0, 400),) and plan.files_read == 4 and plan.files_kept == 0 and plan.moves == ()
    assert plan.changes_layout and all(f.done for f in plan.completed()[0].files)
    assert not any(f.done for f in plan.layout.files)  # pending until read: a crash reads them again


def test_the_same_files_at_a_new_commit_read_nothing_and_change_nothing() -> None:
    plan = plan_sync(FOUR, _recorded(FOUR), FP, "2" * 40)
    assert plan.read == () and plan.files_kept == 4 and plan.rows_unchanged == 400 and plan.idle


def test_an_append_that_renames_the_old_files_reads_only_the_new_one() -> None:
    appended = _files(*[(f"t-{i}-of-5", c, 100) for i, c in enumerate("abcd")], ("t-4-of-5", "e", 50))
    plan = plan_sync(appended, _recorded(FOUR), FP, "2" * 40)
    assert plan.read == ((400, 450),) and plan.files_read == 1 and plan.files_kept == 4 and plan.moves == ()
    assert plan.end_row == 450 and plan.changes_layout


def test_a_grown_middle_file_is_read_and_the_files_after_it_move() -> None:
    grown = _files(("t-0-of-4", "a", 100), ("t-1-of-4", "b2", 120), ("t-2-of-4", "c", 100), ("t-3-of-4", "d", 100))
    plan = plan_sync(grown, _recorded(FOUR), FP, "2" * 40)
    assert plan.read == ((100, 220),) and plan.moves == (RowMove(200, 400, 20),)  # c and d: one move
    assert plan.rows_moved == 200 and plan.rows_unchanged == 100 and plan.end_row == 420


def test_a_deleted_file_moves_the_rest_down_and_the_end_comes_earlier() -> None:
    deleted = _files(("t-0-of-4", "a", 100), ("t-2-of-4", "c", 100), ("t-3-of-4", "d", 100))
    plan = plan_sync(deleted, _recorded(FOUR), FP, "2" * 40)
    assert plan.read == () and plan.moves == (RowMove(200, 400, -100),) and plan.end_row == 300


def test_a_revert_after_a_change_reads_the_file_again() -> None:
    changed = _files(("t-0-of-4", "a", 100), ("t-1-of-4", "b2", 100), ("t-2-of-4", "c", 100), ("t-3-of-4", "d", 100))
    plan = plan_sync(FOUR, _recorded(changed), FP, "3" * 40)
    assert plan.read == ((100, 200),) and plan.files_kept == 3


def test_files_not_done_are_read_again_and_another_fingerprint_reads_everything() -> None:
    half = plan_sync(FOUR, None, FP, "1" * 40).layout  # recorded before any file was read: nothing done
    again = plan_sync(FOUR, half, FP, "1" * 40)  # a retry after a crash: the same layout, but files to read
    assert again.read == ((0, 400),) and not again.changes_layout and not again.idle
    assert plan_sync(FOUR, _recorded(FOUR), "other", "1" * 40).read == ((0, 400),)


def test_two_files_with_the_same_content_each_keep_their_own_rows() -> None:
    twins = _files(("x", "same", 10), ("y", "same", 10))
    plan = plan_sync(twins, _recorded(twins), FP, "2" * 40)
    assert plan.read == () and plan.moves == () and plan.files_kept == 2


def _tars(*contents: str) -> list[DataFile]:
    """Tars as listed: content ids, rows unknown until read."""
    return [DataFile(f"train-{i:05d}.tar", content, 0, 0) for i, content in enumerate(contents)]


def _counter(rows: dict[str, int], files: list[DataFile], asked: list[list[int]]) -> Callable[[list[int]], list[int]]:
    """Counts the rows of the tars at these positions, as reading them would; remembers what it was asked."""
    def count(positions: list[int]) -> list[int]:
        asked.append(positions)
        return [rows[files[position].content_id] for position in positions]
    return count


def test_tars_are_sized_from_the_record_and_by_counting_the_changed_ones_and_new_ones_at_the_end_read_whole() -> None:
    asked: list[list[int]] = []
    rows = {"a": 10, "b": 12, "c": 0, "x": 5, "d": 7}
    tars = _tars("a", "b", "c")
    first_sized, first_unsized = sized_files(tars, None, FP, _counter(rows, tars, asked))
    first = plan_sync(first_sized, None, FP, "1" * 40, first_unsized)
    assert (first_sized, asked, first.files_read, first.end_row, first.rows_to_read) == ([], [], 3, None, None)
    recorded, end = first.completed([10, 12, 0])
    assert end == 22 and [(f.rows, f.first_row, f.done) for f in recorded.files] == [(10, 0, True), (12, 10, True), (0, 22, True)]

    appended = _tars("a", "b", "c", "d")  # new tars after the last recorded one: read whole, nothing counted
    sized, unsized = sized_files(appended, recorded, FP, _counter(rows, appended, asked))
    assert asked == [] and [f.content_id for f in unsized] == ["d"] and sized[-1].first_row == 22

    changed = _tars("a", "x", "c")  # a changed tar before a recorded one: counted, so the one after it moves
    sized, unsized = sized_files(changed, recorded, FP, _counter(rows, changed, asked))
    assert asked == [[1]] and unsized == []
    assert [(f.content_id, f.rows, f.first_row) for f in sized] == [("a", 10, 0), ("x", 5, 10), ("c", 0, 15)]
    plan = plan_sync(sized, recorded, FP, "2" * 40, unsized)
    assert (plan.files_kept, plan.files_read, plan.rows_unchanged, plan.read, plan.end_row) == (2, 1, 10, ((10, 15),), 15)

    deleted = _tars("b", "c")  # the first deleted: every tar left is recorded, their rows move
    sized, unsized = sized_files(deleted, recorded, FP, _counter(rows, deleted, asked))
    plan = plan_sync(sized, recorded, FP, "2" * 40, unsized)
    assert unsized == [] and plan.end_row == 12 and plan.moves == (RowMove(10, 22, -10),) and plan.read == ()
    assert sized_files(_tars("a"), recorded, "another fingerprint", _counter(rows, _tars("a"), asked)) == ([], _tars("a"))
    assert asked == [[1]]
