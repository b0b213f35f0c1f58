"""The one atomic-write helper behind models, checkpoints, reports, engines and caches."""
import errno
import os

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
