"""The one atomic-write helper behind models, checkpoints, reports, engines and caches."""
import errno
import os
import subprocess
import sys
import time

import pytest

from seg_perception import files


def _entries(folder):
    return sorted(os.listdir(folder))


def test_a_finished_block_replaces_the_file_with_the_mode_of_a_plain_open(tmp_path):
    target = tmp_path / 'model.onnx'
    target.write_bytes(b'old')
    with files.replaced_atomically(str(target)) as temporary:
        assert os.path.dirname(temporary) == str(tmp_path)        # same file system: a rename
        with open(temporary, 'wb') as stream:
            stream.write(b'new')
        assert target.read_bytes() == b'old'                     # nothing visible yet
    assert target.read_bytes() == b'new'
    assert _entries(tmp_path) == ['model.onnx']
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(target).st_mode & 0o777 == 0o666 & ~umask


def test_a_failed_block_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / 'last.pt'
    target.write_bytes(b'the checkpoint before')
    with pytest.raises(RuntimeError, match='check failed'):
        with files.replaced_atomically(str(target)) as temporary:
            with open(temporary, 'wb') as stream:
                stream.write(b'half a checkpo')
            raise RuntimeError('check failed')
    assert target.read_bytes() == b'the checkpoint before'
    assert _entries(tmp_path) == ['last.pt']


def test_an_interrupt_also_cleans_up(tmp_path):
    target = tmp_path / 'report.md'
    with pytest.raises(KeyboardInterrupt):
        with files.replaced_atomically(str(target)):
            raise KeyboardInterrupt
    assert _entries(tmp_path) == []


def test_durable_writes_sync_the_data_before_the_rename(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, 'fsync', lambda fd: (events.append('fsync'), real_fsync(fd)))
    monkeypatch.setattr(os, 'replace', lambda a, b: (events.append('replace'), real_replace(a, b)))
    files.write_bytes(str(tmp_path / 'a.engine'), b'engine', durable=True)
    assert events == ['fsync', 'replace']
    events.clear()
    files.write_bytes(str(tmp_path / 'b.json'), b'{}')
    assert events == ['replace']


def test_private_files_keep_mkstemps_mode_and_folders_are_created(tmp_path):
    target = tmp_path / 'new' / 'folder' / 'secret.bin'
    files.write_bytes(str(target), b'x', readable=False)
    assert target.read_bytes() == b'x'
    assert os.stat(target).st_mode & 0o777 == 0o600


def test_write_text_is_utf8(tmp_path):
    target = tmp_path / 'metrics.md'
    files.write_text(str(target), 'road 94.1 % · ego ✓\n')
    assert target.read_bytes().decode('utf-8') == 'road 94.1 % · ego ✓\n'


def test_a_failed_write_names_the_file_being_written(tmp_path):
    """A full disk's OSError names no file (or the temporary): the error names the target."""
    target = tmp_path / 'last.pt'
    target.write_bytes(b'the checkpoint before')
    with pytest.raises(OSError) as caught:
        with files.replaced_atomically(str(target)) as temporary:
            with open(temporary, 'wb') as stream:
                stream.write(b'half')
            raise OSError(errno.ENOSPC, 'No space left on device')
    assert caught.value.errno == errno.ENOSPC and caught.value.filename == str(target)
    assert str(target) in str(caught.value) and 'No space left on device' in str(caught.value)
    with pytest.raises(PermissionError) as caught:              # the errno keeps its subclass
        with files.replaced_atomically(str(target)) as temporary:
            raise PermissionError(errno.EACCES, 'Permission denied', temporary)
    assert caught.value.filename == str(target)
    assert target.read_bytes() == b'the checkpoint before'
    assert _entries(tmp_path) == ['last.pt']


def _dead_pid():
    """The PID of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, '-c', 'pass'])
    child.wait()
    return child.pid


def _plant(folder, name, age_s):
    path = folder / name
    path.write_bytes(b'half a checkpoint')
    then = time.time() - age_s
    os.utime(path, (then, then))
    return name


def test_temporaries_are_named_for_their_target_and_writer(tmp_path):
    with files.replaced_atomically(str(tmp_path / 'last.pt')) as temporary:
        name = os.path.basename(temporary)
        assert name.startswith(f'.last.pt.{os.getpid()}.') and name.endswith('.tmp')
        with open(temporary, 'wb') as stream:
            stream.write(b'x')
        # its own writer is alive: never stale, however old
        os.utime(temporary, (0, 0))
        assert files.remove_stale_temporaries(str(tmp_path), ['last.pt']) == []
    assert _entries(tmp_path) == ['last.pt']


def test_only_our_stale_temporaries_are_removed(tmp_path):
    dead, old = _dead_pid(), files.STALE_UNNAMED_AFTER_S + 60
    stale = [_plant(tmp_path, f'.last.pt.{dead}.k2j_9xab.tmp', old),
             _plant(tmp_path, f'.best.pt.{dead}.aaaaaaaa.tmp', files.STALE_AFTER_S + 5),
             _plant(tmp_path, '.last.pt.q8w7e6r5.tmp', old)]          # written before the PID
    kept = [_plant(tmp_path, f'.last.pt.{os.getpid()}.abcdefgh.tmp', old),  # writer alive
            _plant(tmp_path, f'.last.pt.{dead}.abcdefgh.tmp', 1),      # just written
            _plant(tmp_path, '.last.pt.abcdefgh.tmp', 60),             # no PID, young
            _plant(tmp_path, f'.notes.txt.{dead}.abcdefgh.tmp', old),  # not a target
            _plant(tmp_path, f'.last.pt.{dead}.abcdefgh.bak', old),    # not our naming
            _plant(tmp_path, 'last.pt', old)]
    removed = files.remove_stale_temporaries(str(tmp_path), ['last.pt', 'best.pt'])
    assert sorted(removed) == sorted(str(tmp_path / n) for n in stale)
    assert _entries(tmp_path) == sorted(kept)
    assert files.remove_stale_temporaries(str(tmp_path / 'missing'), ['last.pt']) == []
