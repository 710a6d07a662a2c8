"""The patched wheel of tools/apply.sh --wheel DIR [--release X].

Writes DIR/optax-<release>+typestable-py3-none-any.whl: the release's files,
offline first (the installed optax if every file is as its RECORD says, else
the wheel cache $OPTAX_WHEEL_CACHE, else PyPI; a wheel has the sha256 its
manifest pins), patched as apply.py patches
(each file reaches its pinned sha256); METADATA says Version
<release>+typestable (a PEP 440 local version: optax==<release> still
matches), in optax-<release>+typestable.dist-info, RECORD regenerated. The
checks run on the release's files (before) and the wheel's (after); a wheel
whose checks regress is not written. Reproducible: entries sorted (the
dist-info last), dated 1980-01-01, mode 644, stored uncompressed (deflated
bytes depend on the zlib build): the same release and series give the same
bytes on every machine.
"""

import base64
import csv
import hashlib
import io
import os
import pathlib
import shlex
import tempfile
import zipfile

import series
import locate

LOCAL = "+typestable"  # the local version label of our wheels
OWN = ("INSTALLER", "REQUESTED", "RECORD", "direct_url.json",  # installers'
       "uv_cache.json")


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


def _release(ui, installed, release):
  """{name: bytes} of RELEASE's wheel but its RECORD, saying from where."""
  files, why = _installed(installed, release)
  if files is None:
    cached = (series.WHEELS / f"optax-{release}-py3-none-any.whl").exists()
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
  return files


def _zip(files, info):
  """The bytes of a wheel of FILES, with a RECORD: the same on every run."""
  names = sorted(files, key=lambda n: (n.startswith(info), n))
  files[info + "RECORD"] = "".join(
      f"{n},{_record_hash(files[n])},{len(files[n])}\n" for n in names
  ).encode() + f"{info}RECORD,,\n".encode()
  out = io.BytesIO()
  with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
    for name in names + [info + "RECORD"]:
      entry = zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0))
      entry.create_system, entry.external_attr = 3, 0o100644 << 16
      zf.writestr(entry, files[name])
  return out.getvalue()


def build(ui, python, release, out_dir):
  """Writes the wheel of RELEASE (default: PYTHON's optax's) into OUT_DIR;
  UI: the apply module (versions, verdicts, regression, abandoned)."""
  found = locate.installed(python)
  if not release and not found:
    raise locate.Failure(2, f"no optax in the environment of {python}: use "
                     "--release X")
  release = release or found[0].replace(LOCAL, "")
  supported = [t.release for t in series.targets()]
  if release not in supported:
    raise locate.Failure(3, f"optax {release} is not a supported release "
                     f"(supported: {', '.join(supported)}); {ui.GIT_AM}")
  files, pins = _release(ui, found, release), series.manifest(release)
  for path, (released, _) in pins.items():
    if series.sha256(files.get(path, b"")) != released:
      raise locate.Failure(4, f"{path} of optax {release} is not the release's "
                       f"(pinned sha256 {released[:12]}): nothing written")
  contents = ui.versions(series.target(release).folder, pins, dict.fromkeys(
      pins, "released"), files)
  info, ours = (f"optax-{release}{v}.dist-info/" for v in ("", LOCAL))
  version = f"\nVersion: {release}\n"
  if version not in files.get(info + "METADATA", b"").decode():
    raise locate.Failure(4, f"{info}METADATA does not say Version: {release}")
  patched = dict(files, **{p: contents[p]["patched"] for p in pins}, **{
      info + "METADATA": files[info + "METADATA"].decode().replace(
          version, f"\nVersion: {release}{LOCAL}\n").encode()})
  patched = {(ours + n[len(info):] if n.startswith(info) else n): data
             for n, data in patched.items()}
  with tempfile.TemporaryDirectory() as tmp:
    verdicts = {}
    for label, tree in (("before", files), ("after", patched)):
      for name, data in tree.items():
        file = pathlib.Path(tmp, label, name)
        file.parent.mkdir(parents=True, exist_ok=True)
        file.write_bytes(data)
      verdicts[label] = ui.verdicts(python, pathlib.Path(tmp, label), True,
                                    label)
  before, after = verdicts["before"], verdicts["after"]
  reason = ui.regression(before, after)
  if reason:
    raise locate.Failure(1, f"{reason}: no wheel written")
  if isinstance(before, str):
    locate.say("the checks could not run before: written anyway (every touched "
           "file has its pinned sha256)")
  for change in series.behaviour_changes(series.target(release).folder):
    locate.say(f"behaviour change: {change}")
  data, whl = _zip(patched, ours), pathlib.Path(
      out_dir, f"optax-{release}{LOCAL}-py3-none-any.whl").absolute()
  whl.parent.mkdir(parents=True, exist_ok=True)
  for old in whl.parent.glob(f".{whl.name}.*.tmp"):  # of a killed build
    if ui.abandoned(old.name.split(".")[-2]):
      old.unlink(missing_ok=True)
  tmp = whl.with_name(f".{whl.name}.{os.getpid()}.tmp")
  try:
    tmp.write_bytes(data)
    os.replace(tmp, whl)
  finally:
    tmp.unlink(missing_ok=True)
  digest = series.sha256(data)
  quoted = shlex.quote(str(whl))  # for a shell, where the commands go
  locate.say(f"wrote {whl}\n  sha256 {digest}\n  requirements.txt: optax @ "
         f"{whl.as_uri()} --hash=sha256:{digest}\n  install: "
         f"{locate.install(python, quoted)}\n  read-only or shared optax: pip "
         f"install --no-deps --target DIR {quoted}; PYTHONPATH=DIR (README: "
         "Deploy)")
  return 0
