"""The wheel of tools/apply.sh --wheel (README: Deploy): the release's files,
from the installed optax or its wheel, patched, as optax-X+typestable.
"""

import base64
import csv
import hashlib
import io
import os
import pathlib
import shlex
import zipfile

import locate
import series

LOCAL = "+typestable"  # the local version label of our wheels
OWN = ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json",  # installers'
       "uv_cache.json")
TMP = ".{}.{}.tmp"  # .NAME.PID.tmp, beside NAME


def file_name(release):
  return series.wheel_name(release + LOCAL)


def _record_hash(data):
  return "sha256=" + base64.urlsafe_b64encode(
      hashlib.sha256(data).digest()).rstrip(b"=").decode()


def _kept(name, info):  # a file of the wheel, not one its installer wrote
  return not name.startswith(info) or name[len(info):] not in OWN


def _installed(installed, release):
  """({name: bytes} of RELEASE as installed, or None; what they are)."""
  version, init = installed or (None, None)
  if version != release:
    return None, f"the installed optax is {version or 'none'}"
  root, info = pathlib.Path(init).parents[1], f"optax-{release}.dist-info/"
  files = {}
  try:
    with open(root / info / "RECORD", encoding="utf-8", newline="") as f:
      for name, digest, *_ in csv.reader(f):
        if digest and _kept(name, info):
          if not name.startswith(("optax/", info)):
            return None, f"the installed optax has {name}"
          files[name] = (root / name).read_bytes()
          if _record_hash(files[name]) != digest:
            return None, f"the installed {name} is not as its RECORD says"
  except (OSError, ValueError) as e:
    return None, f"the installed optax's files: {getattr(e, 'strerror', e)}"
  return (files or None), (f"the installed optax in {root} (as its RECORD "
                           "says)" if files else "its RECORD lists no file")


def release_files(found, release, pins):
  """{name: bytes} of RELEASE's wheel but its RECORD, from the installed
  optax (FOUND: its [version, __init__.py]) if each is as its RECORD says,
  else the wheel cache, else PyPI, saying which; the files PINS pins
  checked."""
  files, why = _installed(found, release)
  if files is None:
    cached = (series.WHEELS / series.wheel_name(release)).exists()
    try:  # the cached or downloaded wheel, with its pinned sha256
      path = series.wheel(release)
    except series.WheelError as e:  # (a broken manifest: exit 6)
      raise locate.Failure(2, f"{why}; {e}" + ("" if cached else (
          f" (pip download --no-deps -d {series.WHEELS} optax==={release})"))
                           + ": nothing written") from None
    with zipfile.ZipFile(path) as zf:
      files = {i.filename: zf.read(i) for i in zf.infolist() if not
               i.is_dir() and _kept(i.filename, f"optax-{release}.dist-info/")}
    why = ("the wheel cache" if cached else "PyPI, into the wheel cache") + (
        f" ({why}): {path}")
  locate.say(f"optax {release}'s files from {why}")
  for path, (released, _) in pins.items():
    if series.sha256(files.get(path, b"")) != released:
      raise locate.Failure(4, f"{path} of optax {release} is not the "
                           f"release's (pinned sha256 {released[:12]}): "
                           "nothing written")
  return files


def patched(files, new, release):
  """The files of our wheel: FILES with NEW's, its METADATA and dist-info
  saying RELEASE+typestable."""
  info, ours = (f"optax-{release}{v}.dist-info/" for v in ("", LOCAL))
  line, meta = f"Version: {release}", files.get(info + "METADATA", b"").decode()
  if f"\n{line}\n" not in meta:
    raise locate.Failure(4, f"{info}METADATA does not say {line}")
  files = dict(files, **new, **{info + "METADATA": meta.replace(
      f"\n{line}\n", f"\n{line}{LOCAL}\n").encode()})
  return {(ours + n[len(info):] if n.startswith(info) else n): data
          for n, data in files.items()}


def _zip(files, info):
  """The bytes of a wheel of FILES, with a RECORD in INFO, the same on every
  machine: entries sorted (INFO last), dated 1980-01-01, mode 644, stored
  uncompressed (deflated bytes depend on the zlib build)."""
  names = sorted(files, key=lambda n: (n.startswith(info), n))
  files = dict(files, **{info + "RECORD": "".join(
      f"{n},{_record_hash(files[n])},{len(files[n])}\n" for n in names
  ).encode() + f"{info}RECORD,,\n".encode()})
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
    for name in names + [info + "RECORD"]:
      entry = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
      entry.create_system, entry.external_attr = 3, 0o100644 << 16
      zf.writestr(entry, files[name])
  return out.getvalue()


def write(files, release, out_dir, python):
  """Writes the wheel of FILES (patched()'s) into OUT_DIR, atomically, and
  says how to install it."""
  data = _zip(files, f"optax-{release}{LOCAL}.dist-info/")
  whl = pathlib.Path(out_dir, file_name(release)).absolute()
  whl.parent.mkdir(parents=True, exist_ok=True)
  for old in locate.leftovers(whl, TMP):  # of a killed build
    old.unlink(missing_ok=True)
  tmp = whl.with_name(TMP.format(whl.name, os.getpid()))
  tmp.unlink(missing_ok=True)  # this PID's name: ours, even as a symlink
  try:
    with open(tmp, "xb") as f:
      f.write(data)
    os.replace(tmp, whl)
  finally:
    tmp.unlink(missing_ok=True)
  digest = series.sha256(data)
  quoted = shlex.quote(str(whl))  # for a shell, where the commands go
  locate.say(f"wrote {whl}\n  sha256 {digest}\n  requirements.txt: optax @ "
             f"{whl.as_uri()} --hash=sha256:{digest}\n  install: "
             f"{locate.install(python, quoted)}\n  read-only or shared optax: "
             f"pip install --no-deps --target DIR {quoted}; PYTHONPATH=DIR "
             "(README: Deploy)")
  return 0
