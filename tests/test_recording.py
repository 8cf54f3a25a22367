"""Recording streams to Parquet and replaying them (livestream/recording.py, issue 11).

Real servers on 127.0.0.1 port 0, ``livestream record`` and ``livestream replay`` as real
subprocesses, the dataset read back with plain pandas/pyarrow (no livestream code).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from support import ROOT, livestream_cli, livestream_env, wait_until

import livestream as ls
from conftest import TOKEN
from livestream.recording import RecordingError, finished, read_events, replay

ROWS = 1_000_000
BATCH = 10_000


def _source(first: int, rows: int) -> dict[str, np.ndarray]:
    """Rows ``first:first+rows`` of the published feed; values derive from the offset."""
    k = np.arange(first, first + rows, dtype=np.int64)
    return {"time": 1.7e12 + k * 0.5, "price": 100.0 + np.sin(k / 1000.0), "volume": k * 3}


def _data_rows(folder: Path) -> int:
    files = [p for p in (folder / "stream=feed").glob("*.parquet")] if folder.exists() else []
    return sum(int(p.stem.split("-")[2]) - int(p.stem.split("-")[1]) + 1 for p in files)


def _check_against_source(frame: pd.DataFrame) -> None:
    frame = frame.sort_values("_offset").reset_index(drop=True)
    offsets = frame["_offset"].to_numpy()
    assert len(np.unique(offsets)) == len(offsets), "duplicate offsets"
    assert np.array_equal(offsets, np.arange(offsets[0], offsets[0] + len(offsets))), "a gap"
    want = _source(int(offsets[0]), len(offsets))
    for name, values in want.items():
        assert np.array_equal(frame[name].to_numpy(), values), f"column {name} differs"


@pytest.mark.timeout(60)
def test_record_survives_sigkill_and_resumes_without_duplicates(
    server_factory: Any, running: Any, tmp_path: Path
) -> None:
    live_server = server_factory(history=ROWS)  # the restarted recorder finds every row
    out = tmp_path / "rec"
    url = live_server.ws_url
    with ls.connect(url, token=TOKEN) as client:
        client.publish("feed", _source(0, BATCH))  # the stream exists before the recorder
        recorder = running("record", "feed", "--out", str(out), "--url", url, "--token", TOKEN,
                           "--flush", "0.1")  # fmt: skip
        recorder.expect("recording feed")
        for first in range(BATCH, ROWS // 2, BATCH):
            client.publish("feed", _source(first, BATCH))
        wait_until(lambda: _data_rows(out) >= BATCH, 20, "a first flush of the recorder")
        recorder.proc.send_signal(signal.SIGKILL)
        recorder.proc.wait(10)

        # Killed mid-way: what is on disk reads back completely, with pandas alone.
        frame = pd.read_parquet(out)
        assert len(frame) > 0 and frame["_offset"].min() == 0
        _check_against_source(frame)
        assert set(frame["stream"].astype(str)) == {"feed"}

        for first in range(ROWS // 2, ROWS, BATCH):
            client.publish("feed", _source(first, BATCH))
        again = running("record", "feed", "--out", str(out), "--url", url, "--token", TOKEN,
                        "--flush", "0.1")  # fmt: skip
        again.expect("recording feed")
        client.control("feed", "pause")  # state changes the recording must show
        client.control("feed", "resume")
        wait_until(lambda: _data_rows(out) >= ROWS, 30, "every row recorded")
        again.proc.send_signal(signal.SIGTERM)
        assert again.proc.wait(15) == 0, again.output

    frame = pd.read_parquet(out)
    assert len(frame) == ROWS
    _check_against_source(frame)
    epochs = set(frame["_epoch"].astype(str))
    assert epochs == {live_server.stream("feed").epoch}
    events = read_events(out, "feed")
    kinds = list(events["kind"])
    assert kinds.count("start") == 2 and "reset" not in kinds, kinds
    states = [json.loads(s) for s in events.loc[events["kind"] == "state", "state"]]
    assert any(s["paused"] for s in states) and not states[-1]["paused"], states
    assert events.loc[events["kind"] == "state", "by"].isna().all()
    assert not list(out.rglob(".*.tmp")), "temporary files left behind"
    meta = json.loads((out / "_livestream.json").read_text())
    assert meta["format"] == "livestream-recording"
    assert meta["streams"]["feed"]["schema"] == {
        "time": "float64",
        "price": "float64",
        "volume": "int64",
    }


def test_stream_record_keeps_controls_and_marks_gaps(live_server: Any, tmp_path: Path) -> None:
    stream = live_server.stream("walk", history=100, params={"volatility": ls.Float(0.02, max=1)})
    out = tmp_path / "rec"
    rec = stream.record(out, flush=0.05)
    stream.append(_source(0, 10))
    wait_until(lambda: rec.rows == 10, 5, "the first rows on disk")
    stream.control("set", {"volatility": 0.5}, by="control")
    stream.append(_source(10, 10_000))  # 100 rows of history: the recorder must miss most
    stream.append(_source(10_010, 5))
    wait_until(lambda: rec.rows >= 100, 5, "the rows after the gap")
    rec.stop()

    frame = pd.read_parquet(out).sort_values("_offset")
    offsets = frame["_offset"].to_numpy()
    assert offsets[:10].tolist() == list(range(10))
    assert offsets[-1] == 10_014 and offsets[10] > 10, "the offsets show the gap"
    events = read_events(out)
    control = events[events["kind"] == "control"].iloc[0]
    assert control["action"] == "set" and control["by"] == "control"
    assert json.loads(control["params"]) == {"volatility": 0.5}
    assert json.loads(control["state"])["params"]["volatility"] == 0.5
    gap = events[events["kind"] == "reset"].iloc[0]
    assert gap["reason"] == "gap" and gap["missing_from"] == 10 and gap["offset"] == offsets[10]

    # Recording again into the same folder continues after the last row recorded.
    rec = stream.record(out, flush=0.05)
    stream.append(_source(10_015, 3))
    wait_until(lambda: rec.rows == 3, 5, "the rows after the restart")
    rec.stop()
    offsets = pd.read_parquet(out)["_offset"].sort_values().to_numpy()
    assert len(np.unique(offsets)) == len(offsets) and offsets[-1] == 10_017


def test_dataframe_replay_round_trip(live_server: Any) -> None:
    index = pd.date_range("2026-01-01", periods=5_000, freq="1ms", tz="UTC")
    frame = pd.DataFrame(
        {
            "price": np.linspace(1, 2, 5_000),
            "volume": np.arange(5_000, dtype=np.int64),
            "sym": ["A", "B"] * 2_500,
            "up": np.arange(5_000) % 3 == 0,
        },
        index=index,
    )
    stream = replay(frame, "frame", float("inf"), server=live_server)
    assert finished(stream, 10)
    got = stream.to_pandas().reset_index(drop=True)
    assert got["time"].to_numpy().tolist() == (index.as_unit("ns").asi8 / 1e6).tolist()
    pd.testing.assert_frame_equal(got.drop(columns="time"), frame.reset_index(drop=True))
    assert stream.state["params"]["replay_of"] == "a DataFrame"


def test_replay_at_10x_keeps_order_values_and_spacing(live_server: Any) -> None:
    rng = np.random.default_rng(7)
    gaps = rng.uniform(20, 180, 39)  # ms, 4 s of data in all
    times = 1.7e12 + np.concatenate([[0.0], np.cumsum(gaps)])
    frame = pd.DataFrame({"time": times, "value": np.arange(40.0)})
    live_server.stream("paced")  # a viewer watches before the replay starts
    with ls.connect(live_server.ws_url, token=TOKEN) as client:
        sub = client.subscribe("paced")
        replay(frame, "paced", 10.0, server=live_server)
        arrivals: list[float] = []
        values: list[float] = []
        while len(values) < 40:
            batch = sub.next(timeout=5)
            arrivals += [time.monotonic()] * batch.rows
            values += batch.columns["value"].tolist()
    assert values == list(range(40))
    # Rows are due (t - t0) / 10 apart: 0.4 s in all. Aligned on the row that came
    # earliest against its due time, each row's lateness is a sleep's overshoot plus a hop
    # to the server's loop and a socket write: a few ms, but a scheduler stall on this
    # shared 2-core machine can add tens of ms to a few rows (those after it catch up).
    # So: the median within 20 ms, none beyond 150 ms. A replay ignoring the
    # pace (all at once: 0.4 s for the first row) or at 1x (up to 3.6 s) is far outside.
    due = (times - times[0]) / 1000.0 / 10.0
    offset = np.array(arrivals) - due
    late = offset - offset.min()
    assert np.median(late) < 0.02 and late.max() < 0.15, late.round(3)


def test_playback_controls_over_the_protocol(live_server: Any) -> None:
    times = 1.7e12 + np.arange(2_000) * 10.0  # 20 s at 1x
    frame = pd.DataFrame({"time": times, "value": np.arange(2_000.0)})
    live_server.stream("ctl")
    with ls.connect(live_server.ws_url, token=TOKEN) as client:
        sub = client.subscribe("ctl")
        stream = replay(frame, "ctl", 1.0, server=live_server)
        controls = client.list()[0]["controls"]["params"]
        assert {"speed", "fastest", "position", "loop", "replay_of"} <= set(controls)

        state = client.control("ctl", "set", speed=50.0)
        assert state["params"]["speed"] == 50.0
        seen: list[float] = []
        while not seen or seen[-1] < times[1_000]:
            seen += sub.next(timeout=5).columns["time"].tolist()
        assert client.control("ctl", "pause")["paused"] is True
        held = stream.end
        assert client.control("ctl", "resume")["paused"] is False
        assert stream.end >= held

        # Seek backwards: the viewer gets `reset` (restart), then rows from the target on.
        target = float(times[200]) + 5.0
        client.control("ctl", "set", position=target)
        while True:
            got = sub.next(timeout=5).columns["time"].tolist()
            if got[0] < seen[-1]:
                break
            seen += got
        assert got[0] == times[201]
        assert [r.reason for r in sub.resets] == ["restart"]
        assert sub.resets[0].epoch == stream.epoch


def test_replay_command_serves_a_recording(live_server: Any, running: Any, tmp_path: Path) -> None:
    stream = live_server.stream("feed")
    rec = stream.record(tmp_path / "rec", flush=0.05)
    stream.append(_source(0, 1_000))
    wait_until(lambda: rec.rows == 1_000, 5, "the rows on disk")
    rec.stop()
    served = running("replay", str(tmp_path / "rec"), "--stream", "feed", "--speed", "max",
                     "--port", "0", "--token", TOKEN)  # fmt: skip
    url = served.expect(r"websocket: (\S+)")[1]
    with ls.connect(url, token=TOKEN) as client:
        sub = client.subscribe("feed")
        got = []
        while len(got) < 1_000:
            got += sub.next(timeout=10).columns["volume"].tolist()
    assert got == _source(0, 1_000)["volume"].tolist()


def test_replay_names_a_bad_file(live_server: Any, tmp_path: Path) -> None:
    bad = tmp_path / "notes.parquet"
    bad.write_text("not parquet at all")
    with pytest.raises(RecordingError, match=r"notes.parquet is not a readable Parquet file"):
        replay(bad, "bad", server=live_server)
    good = tmp_path / "other.parquet"
    pd.DataFrame({"when": [1.0]}).to_parquet(good)
    with pytest.raises(RecordingError, match=r"has no column 'time'.*columns: when"):
        replay(good, "bad", server=live_server)


def test_recording_to_a_folder_that_cannot_be_written(live_server: Any, tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(RecordingError, match=r"cannot write the recording at .*file/rec"):
        live_server.stream("s").record(blocker / "rec")


def test_importing_livestream_does_not_load_pyarrow() -> None:
    code = "import sys, livestream; livestream.Stream; assert 'pyarrow' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


def test_a_replay_shows_the_recorded_control_changes(live_server: Any, tmp_path: Path) -> None:
    params = {"volatility": ls.Float(0.02, min=0, max=1, label="Volatility")}
    stream = live_server.stream("walk", params=params)
    rec = stream.record(tmp_path / "rec", flush=0.05)

    def rows(first: int) -> dict[str, np.ndarray]:
        return {"time": np.full(5, time.time() * 1000.0), "value": np.arange(first, first + 5.0)}

    stream.append(rows(0))
    wait_until(lambda: rec.rows == 5, 5, "the rows before the change")
    stream.set(volatility=0.5)
    time.sleep(0.3)  # the rows after the change are stamped 0.3 s later
    stream.append(rows(5))
    wait_until(lambda: rec.rows == 10, 5, "the rows after the change")
    rec.stop()

    replayed = replay(tmp_path / "rec", "walk-replay", float("inf"), server=live_server)
    assert finished(replayed, 10)
    assert replayed.controls.params["volatility"].label == "Volatility"
    assert replayed.params["volatility"] == 0.5
    # Back to the start at 0.1x: the rows after the change are then 3 s away.
    replayed.set(fastest=False, speed=0.1)
    replayed.set(position=replayed.controls.params["position"].min)
    wait_until(lambda: replayed.params["volatility"] == 0.02, 2, "the value at the start")


def test_text_objects_and_missing_values_survive_record_and_replay(
    live_server: Any, tmp_path: Path
) -> None:
    stream = live_server.stream("mixed")
    rec = stream.record(tmp_path / "rec", flush=0.05)
    stream.append(
        [
            {"time": 1.0, "tags": {"a": [1, 2]}, "name": "x", "ok": True, "n": 3},
            {"time": 2.0, "tags": [1, "b"], "name": None, "ok": False, "n": 4},
        ]
    )
    wait_until(lambda: rec.rows == 2, 5, "the rows on disk")
    rec.stop()
    replayed = replay(tmp_path / "rec", "mixed-replay", float("inf"), server=live_server)
    assert finished(replayed, 5)
    assert replayed.schema == stream.schema
    assert replayed.read(0) == stream.read(0)


def test_a_restarted_stream_starts_a_new_part(live_server: Any, tmp_path: Path) -> None:
    stream = live_server.stream("again")
    rec = stream.record(tmp_path / "rec", flush=0.05)
    stream.append(_source(0, 5))
    wait_until(lambda: rec.rows == 5, 5, "the first epoch on disk")
    old, new = stream.epoch, stream.restart()
    stream.append(_source(0, 3))
    wait_until(lambda: rec.rows == 8, 5, "the second epoch on disk")
    rec.stop()
    frame = pd.read_parquet(tmp_path / "rec")
    parts = frame.groupby(frame["_epoch"].astype(str))["_offset"].apply(sorted).to_dict()
    assert parts == {old: [0, 1, 2, 3, 4], new: [0, 1, 2]}
    names = sorted(p.name for p in (tmp_path / "rec" / "stream=again").iterdir())
    assert sorted(names) == sorted(
        [f"{old}-{0:015d}-{4:015d}.parquet", f"{new}-{0:015d}-{2:015d}.parquet"]
    )
    reset = read_events(tmp_path / "rec").query("kind == 'reset'").iloc[0]
    assert (reset["reason"], reset["epoch"], reset["offset"]) == ("restart", new, 0)


def test_record_command_says_what_went_wrong(live_server: Any, tmp_path: Path) -> None:
    live_server.stream("feed").append(_source(0, 3))
    url = live_server.ws_url
    blocker = tmp_path / "file"
    blocker.write_text("")
    done = livestream_cli("record", "feed", "--out", str(blocker / "rec"), "--url", url,
                          "--token", TOKEN, timeout=60)  # fmt: skip
    assert done.returncode == 1, done.stderr
    assert done.stderr.startswith("livestream: cannot write the recording at "), done.stderr
    assert "Traceback" not in done.stderr

    done = livestream_cli("record", "nope", "--out", str(tmp_path / "rec"), "--url", url,
                          "--token", TOKEN, timeout=60)  # fmt: skip
    assert done.returncode == 1 and "unknown stream 'nope'" in done.stderr, done.stderr

    done = livestream_cli("replay", str(blocker), "--port", "0", timeout=60)
    assert done.returncode == 1, done.stderr
    assert "is not a readable Parquet file" in done.stderr and str(blocker) in done.stderr


def _noisy(first: int, rows: int) -> dict[str, np.ndarray]:
    """Rows that do not compress (a full disk must come quickly), each holding its offset."""
    k = np.arange(first, first + rows, dtype=np.int64)
    noise = np.random.default_rng(first).random((2, rows))
    return {"k": k, "a": noise[0], "b": noise[1]}


def _viewer_rows(sub: Any, want: int, timeout: float) -> np.ndarray:
    """Every offset column value a subscription receives until ``want`` rows (bounded)."""
    got: list[np.ndarray] = []
    deadline = time.monotonic() + timeout
    while sum(len(x) for x in got) < want:
        left = deadline - time.monotonic()
        assert left > 0, f"the viewer got {sum(len(x) for x in got)} of {want} rows"
        got.append(sub.next(timeout=left).columns["k"].copy())
    assert not sub.resets, sub.resets
    return np.concatenate(got)


@pytest.mark.timeout(90)
def test_a_full_disk_stops_the_recorder_with_a_clear_error_and_the_viewers_carry_on(
    server_factory: Any, tmp_path: Path
) -> None:
    """A real full disk: ``livestream record`` writes into a 1 MiB tmpfs mounted in a mount
    namespace of its own (``unshare``, util-linux, in every Debian). It must stop with the
    disk-full error and exit 1, leave what it had written readable (a gap-free prefix, no
    temporary files), while the stream takes rows and a viewer gets every one of them."""
    total, batch = 400_000, 5_000
    url = server_factory(history=total + 100).ws_url  # the viewer reads only at the end
    disk = tmp_path / "disk"
    disk.mkdir()
    # After the recorder ends, the same namespace reads back what it left (the tmpfs is
    # gone with the namespace), with pyarrow alone.
    check = (
        "import json, pathlib, pyarrow.parquet as pq, sys; d = pathlib.Path(sys.argv[1]); "
        "parts = sorted(d.glob('stream=feed/*.parquet')); "
        "k = sorted(x for p in parts for x in pq.read_table(p).column('k').to_pylist()); "
        "print('LEFT', json.dumps({'rows': len(k), 'first': k[0] if k else None, "
        "'last': k[-1] if k else None, 'tmp': [p.name for p in d.rglob('.*.tmp')]}))"
    )
    script = (
        'mount -t tmpfs -o size=1m tmpfs "$1" || exit 97; '
        '"$2" -m livestream record feed --out "$1/rec" --url "$3" --token "$4" --flush 0.1; '
        'rc=$?; "$2" -c "$5" "$1/rec"; exit $rc'
    )
    env = livestream_env()
    with ls.connect(url, token=TOKEN) as client:
        client.publish("feed", _noisy(0, batch))
        viewer = client.subscribe("feed", since=0)
        args = [str(disk), sys.executable, url, TOKEN, check]
        recorder = subprocess.Popen(
            ["unshare", "-rm", "sh", "-c", script, "sh", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            # 400,000 rows of 24 incompressible bytes are 9 MiB: far over the disk.
            for first in range(batch, total, batch):
                client.publish("feed", _noisy(first, batch))
            out, err = recorder.communicate(timeout=60)
        finally:
            if recorder.poll() is None:
                recorder.kill()
                recorder.wait(5)
        assert recorder.returncode == 1, (recorder.returncode, out, err)
        last = err.strip().splitlines()[-1]
        assert re.fullmatch(
            r"livestream: cannot write the recording at .*rec/stream=feed/\S+\.parquet: "
            r"No space left on device; free space on that disk, or record to another "
            r"folder \(--out DIR\)",
            last,
        ), err
        assert "Traceback" not in err
        left = json.loads(out.split("LEFT ", 1)[1])
        assert left["tmp"] == [], "temporary files left behind"
        if left["rows"]:  # what reached the disk is a prefix without a gap
            assert (left["first"], left["last"]) == (0, left["rows"] - 1), left

        # The stream and its viewer carry on: every row, once, in order, then more.
        keys = _viewer_rows(viewer, total, 30)
        assert np.array_equal(keys, np.arange(total))
        client.publish("feed", _noisy(total, 10))
        assert np.array_equal(_viewer_rows(viewer, 10, 10), np.arange(total, total + 10))


@pytest.mark.timeout(60)
def test_a_folder_it_may_not_write_gives_permission_denied_and_the_stream_carries_on(
    live_server: Any, tmp_path: Path
) -> None:
    """``livestream record`` into a folder it has no write permission on (0555). Root may
    write anywhere, so as root the recorder runs without the capability that lets it
    (``setpriv``, util-linux, in every Debian), which is how a service account meets it."""
    url = live_server.ws_url
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    env = livestream_env()
    drop = ["setpriv", "--bounding-set=-dac_override,-dac_read_search"]
    record = ["record", "feed", "--out", str(locked / "rec"), "--url", url, "--token", TOKEN]
    command = [*(drop if os.geteuid() == 0 else []), sys.executable, "-m", "livestream", *record]
    try:
        with ls.connect(url, token=TOKEN) as client:
            client.publish("feed", _noisy(0, 100))
            viewer = client.subscribe("feed", since=0)
            done = subprocess.run(
                command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=40
            )
            assert done.returncode == 1, (done.returncode, done.stdout, done.stderr)
            last = done.stderr.strip().splitlines()[-1]
            assert re.fullmatch(
                r"livestream: cannot write the recording at .*locked/rec\S*: "
                r"Permission denied; record to a folder you may write to, or fix its "
                r"permissions",
                last,
            ), done.stderr
            assert "Traceback" not in done.stderr
            client.publish("feed", _noisy(100, 100))
            assert np.array_equal(_viewer_rows(viewer, 200, 10), np.arange(200))
            assert not list(locked.iterdir())
    finally:
        locked.chmod(0o755)
