"""The one exception root of Glimpse and its subclasses.

Every error a user can cause derives from :class:`GlimpseError`, and also from
the matching built-in, so callers may catch either. How the command lines turn
them into one line each is :mod:`device.commandline`'s. Related errors share an
intermediate base (as gpiozero's ``exc.py``): catch :class:`IngestError`,
:class:`BackupError`, :class:`ConfigError` or a host stage's base to handle them all.
"""


class GlimpseError(Exception):
    """Root of every error Glimpse raises on purpose.

    Attributes:
        exit_status: what a command line exits with when this error ends it.
    """

    exit_status = 2


class BundleInvalid(GlimpseError, ValueError):
    """A bundle is missing, of the wrong version, altered, or inconsistent."""


class BundleNameInvalid(GlimpseError, ValueError):
    """A bundle name given to reload is not a plain directory name (empty, a path,
    hidden, too long, or with control characters): a bad request, not a bad bundle."""


class ModelInvalid(GlimpseError, ValueError):
    """A model directory or ``.tflite`` file cannot be used."""


class ModelUnsupported(GlimpseError, ValueError):
    """A model cannot be used for what was asked (e.g. exported for a runtime that cannot run it)."""


class QueryInvalid(GlimpseError, ValueError):
    """A search query is empty, too long, or not text."""


class ImageUnreadable(GlimpseError, ValueError):
    """A file is not an image Glimpse can read (corrupt, truncated, too large...).

    ``str()`` names the file; :attr:`reason` is the problem alone, for lists
    that show the file's name beside it.
    """

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name, self.reason = name, reason


class ItemNotFound(GlimpseError, KeyError):
    """No item with that id exists in the bundle."""

    def __str__(self):  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "item not found"


class RuntimeMissing(GlimpseError, ImportError):
    """No TFLite interpreter (ai-edge-litert or tflite-runtime) is installed."""


class ConfigError(GlimpseError):
    """Base of settings that cannot be used as written (configuration file, environment, flags)."""


class SettingInvalid(ConfigError, ValueError):
    """A setting has a value of the wrong type or out of range."""


class BridgeInvalid(ConfigError, ValueError):
    """An MQTT setting cannot be used (a node id with characters topics cannot hold)."""


class HardwareInvalid(ConfigError, ValueError):
    """A front-panel setting (pin, display, command) cannot be used as written."""


class PortInUse(GlimpseError, OSError):
    """The daemon's address is taken by another program."""


class OutputRefused(GlimpseError, ValueError):
    """An output cannot be written there: it is, holds or lies inside an input, or is not Glimpse's own to replace."""


class BundleUnreadable(BundleInvalid):
    """This process may not read a bundle's files (owner and mode); the message says how to fix it."""


class CameraUnavailable(GlimpseError, RuntimeError):
    """No camera is configured or found, or it could not take a photo."""


class IngestError(GlimpseError):
    """Base of what stops a photo being added on the device."""


class IngestRefused(IngestError, ValueError):
    """An upload is not accepted (too large, not a photo, queue full...)."""


class IngestBusy(IngestRefused):
    """The ingest queue is full; try again later."""


class IngestDiskFull(IngestRefused):
    """The data directory's disk is full: nothing more can be stored until space is freed."""


class IngestStoreInvalid(IngestError, RuntimeError):
    """The ingest database was written by a newer Glimpse (a schema this one does not know)."""


class BackupError(GlimpseError):
    """Base of what stops a backup or a restore of the data directory."""


class BackupInvalid(BackupError, ValueError):
    """An archive is not a whole, unaltered Glimpse backup, or holds a member that may not be extracted."""


class RestoreRefused(BackupError, ValueError):
    """A restore would replace what is not Glimpse's, or cannot be done now."""


# ---------------------------------------------------------------------------
# The host's errors (``glimpse-provision``), grouped by pipeline as gpiozero's
# exc.py groups by device kind: catch a base to handle a whole stage.


class HostToolsMissing(GlimpseError, ImportError):
    """A host command needs the ``host`` extra (PyTorch, litert-torch...) and it is not installed."""


class CacheInvalid(GlimpseError, ValueError):
    """The host's build cache cannot be used as it is (written by a newer Glimpse)."""


class BundleBuildError(GlimpseError):
    """Base of what stops ``glimpse-provision build`` from writing a bundle."""


class BuildFailed(BundleBuildError, RuntimeError):
    """The build could not produce a bundle (no photos, output in the way...)."""


class BuildInterrupted(BundleBuildError, RuntimeError):
    """Ctrl-C during a build; the cache keeps what was done."""

    exit_status = 130


class ModelBuildError(GlimpseError):
    """Base of what stops the host from making a model (import, training, their data)."""


class CaptionsInvalid(ModelBuildError, ValueError):
    """A captions file cannot be read: unknown form, bad JSON/CSV, missing keys."""


class CaptionImageUnknown(CaptionsInvalid):
    """A COCO annotation names an ``image_id`` that ``images`` does not list."""


class ModelSourceMissing(ModelBuildError, FileNotFoundError):
    """The checkpoint file or directory to import does not exist."""


class ModelSourceInvalid(ModelBuildError, ValueError):
    """The source is not a CLIP model this importer reads, or its files are corrupt."""


class ArchitectureUnknown(ModelBuildError, ValueError):
    """``--arch`` is missing or not an architecture open_clip defines."""


class ParityFailed(ModelBuildError, RuntimeError):
    """The converted towers or tokenizer do not reproduce the source model."""


class CalibrationFailed(ModelBuildError, ValueError):
    """The tuning data cannot give a threshold (no relevant pairs, or the target is never reached)."""


class TrainInvalid(ModelBuildError, ValueError):
    """Training cannot start: bad options, no usable data, a checkpoint that does not fit."""


class TrainInterrupted(ModelBuildError, RuntimeError):
    """Ctrl-C during training; a checkpoint (or the feature cache) keeps what was done."""

    exit_status = 130


class DeployError(GlimpseError):
    """Base of what stops the host from getting Glimpse or a bundle onto devices."""


class TargetInvalid(DeployError, ValueError):
    """A wheelhouse target (platform, Python version, glibc) is not one Glimpse supports."""


class WheelhouseFailed(DeployError, RuntimeError):
    """pip could not build, download or resolve the wheelhouse (network, missing wheel...)."""


class DeviceUnreachable(DeployError, ConnectionError):
    """ssh cannot log in to the device (host down, wrong port, key refused...)."""


class ToolMissing(DeployError, FileNotFoundError):
    """``ssh`` or ``rsync`` is not installed on this host."""


class PushFailed(DeployError, RuntimeError):
    """A push step failed; the message names the step and what the rollback left serving."""


class DiskFull(PushFailed):
    """The device's data directory ran out of space during the transfer."""


class InstallFailed(DeployError, RuntimeError):
    """Setting the device up failed; the message names the step."""


class FleetFailed(DeployError, RuntimeError):
    """ansible-playbook is missing, or at least one device was not updated."""
