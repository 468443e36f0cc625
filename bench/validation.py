"""Validation is the harness's: the validation labels stay in the runner, which answers each epoch's validation.

The training process (bench.train, in the sandbox) gets the validation images only. At each epoch's end it
sends its outputs on them, and the runner answers with `val_loss` and `val_accuracy` computed here from the
labels it holds; Keras's callbacks (ReduceLROnPlateau, EarlyStopping, the entry's own) act on those answers.

What the harness answers, and how:

- `val_loss` is the mean cross-entropy of the outputs against the labels, whatever loss the entry trains
  with: from logits (log-softmax, each image's loss capped at LOGIT_LOSS_CAP) when the trainer says the outputs
  are logits, else from probabilities normalised to sum 1 and clipped to [1e-7, 1 - 1e-7], as Keras's
  categorical cross-entropy computes it. The trainer sends the logits under
  a softmax output layer, which is what Keras on TensorFlow reads too (so the number is the one `fit` logged).
  `val_accuracy` is the fraction of images whose largest output is their label.
- Both are rounded to ANSWER_DECIMALS decimals, and each epoch is answered once, in order, at most
  `max_epochs` times. The answers are still a label oracle: a mean loss in [0, 100] to 1e-6 (about 27 bits)
  and a count of correct images (log2 of the validation size, 12 bits for 5,000) an epoch, about ten labels an
  answer for an entry that spends its epochs asking instead of training (a red team recovered 300 of 300 labels
  on digits before the cap; on MNIST's 5,000 it takes about 500 of the 1,000 epochs). Not a copy of the
  labels, but not nothing: see README "Untrusted code".
- The answer to the `max_epochs`-th request says it is the last; the trainer stops there. A request past it,
  out of order, or malformed ends the answering (the trainer reads end-of-file) and fails that run alone
  (`Harness.problem`): the epochs on the board are the validations answered here.

The wire (two pipes the runner passes into the sandbox, bubblewrap keeps inherited descriptors): a request is
REQUEST (magic, epoch, flags, rows, classes; little-endian uint32s) then rows x classes float32, little-endian,
row-major; rows and classes must be those the harness holds, so a request's size is fixed by the harness, never
by the sender. An answer is ANSWER (magic, epoch, flags, val_loss, val_accuracy as float64).
"""

from __future__ import annotations

import dataclasses
import os
import select
import struct
import threading
import time

import numpy as np

REQUEST = struct.Struct("<4sIIII")
ANSWER = struct.Struct("<4sIIdd")
REQUEST_MAGIC, ANSWER_MAGIC = b"BVQ1", b"BVA1"
FROM_LOGITS = 1  # request flag: the values are logits
LAST = 1  # answer flag: no further validation will be answered
# 1e-6: a tenth of the smallest min_delta of the committed board's callbacks (EarlyStopping's 1e-5), so the
# rounding almost never decides whether an epoch improved, while each answer stays a few bytes of information.
ANSWER_DECIMALS = 6
# Keras's backend epsilon: cross-entropy on probabilities clips them to [EPSILON, 1 - EPSILON].
EPSILON = 1e-7
# The most one image adds to a loss from logits. Keras leaves it unbounded; past 100 (a logit gap of 100 on a wrong
# class) no trained model goes, so the callbacks act as under fit, while an answer carries at most ~27 bits.
LOGIT_LOSS_CAP = 100.0
POLL_MS = 250
READ_CHUNK = 1 << 20
# How long a trainer waits for an answer: the runner answers in well under a second.
ANSWER_TIMEOUT = 600.0


class ProtocolError(Exception):
    """A request the harness does not answer; the message says why, in words for the entry's author."""


@dataclasses.dataclass(frozen=True)
class Answer:
    epoch: int  # 0-based
    val_loss: float  # NaN when the outputs were not finite
    val_accuracy: float
    last: bool  # the challenge's max_epochs is reached: stop training


def cross_entropy(values: np.ndarray, labels: np.ndarray, from_logits: bool) -> float:
    """Mean cross-entropy of (images, classes) `values` (logits or probabilities) against (images,) integer labels."""
    values = values.astype(np.float64)
    with np.errstate(all="ignore"):  # garbage outputs give NaN or inf, never an exception
        if from_logits:
            top = values.max(axis=1, keepdims=True)
            # Capped: an unbounded loss would let one answer spell out dozens of labels (as a loss of 1e11 in base 16).
            log_p = np.maximum(values - (top + np.log(np.exp(values - top).sum(axis=1, keepdims=True))), -LOGIT_LOSS_CAP)
        else:
            p = values / values.sum(axis=1, keepdims=True)
            log_p = np.log(np.clip(p, EPSILON, 1 - EPSILON))
        return float(-log_p[np.arange(len(labels)), labels].mean())


def accuracy(values: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.argmax(values, axis=1) == labels))


def _rounded(value: float) -> float:
    return round(value, ANSWER_DECIMALS) if np.isfinite(value) else float("nan")


class Harness:
    """The runner's side for one run: holds the labels, answers each epoch's validation once, in order,
    at most `max_epochs` times (None: no cap), and keeps what it answered and when."""

    def __init__(self, labels: np.ndarray, num_classes: int, max_epochs: int | None, on_answer=None):
        self.labels = np.asarray(labels, dtype=np.int64)
        self.num_classes, self.max_epochs = int(num_classes), max_epochs
        self.on_answer = on_answer  # called with each Answer given (the runner's progress line)
        self.answers: list[Answer] = []
        self.answered_at: list[float] = []  # time.perf_counter() of each answer
        self.problem: str | None = None  # why answering stopped early, for the run's record

    def answer(self, epoch: int, values: np.ndarray, from_logits: bool) -> Answer:
        """The answer to epoch `epoch`'s (images, classes) outputs. Raises ProtocolError for a request out of
        order, past max_epochs, or of the wrong shape, and keeps its message in `problem`."""
        try:
            return self._answer(epoch, values, from_logits)
        except ProtocolError as refused:
            self.problem = self.problem or str(refused)
            raise

    def _answer(self, epoch: int, values: np.ndarray, from_logits: bool) -> Answer:
        if self.problem:  # as over the pipes: the first refusal ends the answers
            raise ProtocolError(self.problem)
        if self.max_epochs is not None and len(self.answers) >= self.max_epochs:
            raise ProtocolError(f"the training process asked for a validation after the challenge's max_epochs ({self.max_epochs}) "
                                "were answered: it trained more epochs than the challenge allows (an entry must not call fit itself)")
        if epoch != len(self.answers):
            raise ProtocolError(f"the training process asked for epoch {epoch + 1}'s validation after {len(self.answers)} answered: "
                                "each epoch is validated once, in order")
        if values.shape != (len(self.labels), self.num_classes):
            raise ProtocolError(f"the training process sent outputs of shape {values.shape} for "
                                f"{(len(self.labels), self.num_classes)} validation images and classes")
        done = Answer(epoch, _rounded(cross_entropy(values, self.labels, from_logits)), _rounded(accuracy(values, self.labels)),
                      last=self.max_epochs is not None and epoch + 1 >= self.max_epochs)
        self.answers.append(done)
        self.answered_at.append(time.perf_counter())
        if self.on_answer is not None:
            self.on_answer(done)
        return done

    def record_fields(self, stage_started: float, stage_ended: float) -> dict:
        """What the record takes from the harness, not from the trainer's claims: `epochs` (validations answered),
        the history's `val_loss`/`val_accuracy` (non-finite as None), `train_seconds` (the whole training stage:
        start-up, training, `finalize` and saving, so work done before the first or after the last answer shows)
        and `export_seconds` (the part after the last answer).
        Times are time.perf_counter() seconds."""
        last = self.answered_at[-1] if self.answered_at else stage_started
        finite = lambda value: value if np.isfinite(value) else None
        return {"epochs": len(self.answers),
                "history": {"val_loss": [finite(a.val_loss) for a in self.answers],
                            "val_accuracy": [finite(a.val_accuracy) for a in self.answers]},
                "train_seconds": round(max(stage_ended - stage_started, 0.0), 3),
                "export_seconds": round(max(stage_ended - last, 0.0), 3)}


class Local:
    """In-process answers (tests, benchmarks, run_in_process): the same `ask` as Client, with the labels here."""

    def __init__(self, harness_or_labels, max_epochs: int | None = None):
        self.harness = harness_or_labels if isinstance(harness_or_labels, Harness) else None
        self.labels, self.max_epochs = harness_or_labels, max_epochs

    def ask(self, epoch: int, values: np.ndarray, from_logits: bool) -> Answer:
        if self.harness is None:  # the number of classes is the outputs'
            self.harness = Harness(self.labels, values.shape[1], self.max_epochs)
        return self.harness.answer(epoch, np.asarray(values, dtype=np.float32), from_logits)


def channel(validation, max_epochs: int | None = None):
    """`validation` as something to `ask`: a Client or Local as it is, integer labels answered in this process."""
    return validation if hasattr(validation, "ask") else Local(validation, max_epochs)


# ---- the trainer's side ------------------------------------------------------------------------------------

class Client:
    """The training process's end of the pipes: `ask` sends one epoch's outputs and waits for the answer."""

    def __init__(self, requests_fd: int, answers_fd: int, timeout: float = ANSWER_TIMEOUT):
        self.requests_fd, self.answers_fd, self.timeout = requests_fd, answers_fd, timeout

    def ask(self, epoch: int, values: np.ndarray, from_logits: bool) -> Answer:
        """Raises ProtocolError when the harness answers no more (it refused the request or is gone)."""
        values = np.ascontiguousarray(values, dtype="<f4")
        header = REQUEST.pack(REQUEST_MAGIC, epoch, FROM_LOGITS if from_logits else 0, *values.shape)
        try:
            _write_all(self.requests_fd, header + values.tobytes())
        except BrokenPipeError:
            raise ProtocolError("the harness stopped answering validations (the run's record says why)") from None
        reply = _read_exactly(self.answers_fd, ANSWER.size, time.monotonic() + self.timeout)
        magic, answered, flags, val_loss, val_accuracy = ANSWER.unpack(reply)
        if magic != ANSWER_MAGIC or answered != epoch:
            raise ProtocolError(f"the harness's answer to epoch {epoch + 1} is not one")
        return Answer(answered, val_loss, val_accuracy, bool(flags & LAST))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exactly(fd: int, size: int, deadline: float) -> bytes:
    data = b""
    while len(data) < size:
        if not select.select([fd], [], [], max(0.0, deadline - time.monotonic()))[0]:
            raise ProtocolError("the harness did not answer the validation in time")
        chunk = os.read(fd, size - len(data))
        if not chunk:
            raise ProtocolError("the harness stopped answering validations (the run's record says why)")
        data += chunk
    return data


# ---- the runner's side of the pipes ------------------------------------------------------------------------

class Served:
    """Two pipes between the runner and one training process, and a thread answering on them with `harness`.

    Create it before writing the job (`job_fields` names the descriptors the trainer inherits), pass
    `child_fds` to the process (subprocess's pass_fds), call `start()` once it runs, and `close()` (or leave the
    `with` block) after it ended. The thread never blocks the runner: it polls, reads at most one request's
    fixed size, and stops at end-of-file, at `close()`, or at the first request it refuses."""

    def __init__(self, harness: Harness):
        self.harness = harness
        self._requests_read, self._requests_write = os.pipe()
        self._answers_read, self._answers_write = os.pipe()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._started = False

    @property
    def child_fds(self) -> tuple[int, int]:
        return self._requests_write, self._answers_read

    def job_fields(self) -> dict:
        return {"requests_fd": self._requests_write, "answers_fd": self._answers_read}

    def start(self) -> None:
        """The child holds its ends now: close them here, so its end (and its children's) is end-of-file."""
        for fd in self.child_fds:
            os.close(fd)
        self._requests_write = self._answers_read = -1
        self._started = True
        self._thread.start()

    def close(self) -> None:
        """Stop answering and close every end still open here (the thread closes its own as it ends)."""
        self._stop.set()
        if self._started:
            self._thread.join(timeout=10)
            ends = [self._requests_write, self._answers_read]
        else:
            ends = [self._requests_write, self._answers_read, self._requests_read, self._answers_write]
            self._requests_read = self._answers_write = -1
        for fd in ends:
            if fd >= 0:
                os.close(fd)
        self._requests_write = self._answers_read = -1

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _serve(self) -> None:
        try:
            while self._serve_one():
                pass
        except ProtocolError as refused:
            self.harness.problem = self.harness.problem or str(refused)
        except OSError:  # the trainer closed its end of the answers: nothing more to answer
            pass
        finally:
            os.close(self._requests_read)
            os.close(self._answers_write)  # the trainer's next wait for an answer reads end-of-file

    def _serve_one(self) -> bool:
        """Read one request and answer it; False at end-of-file or when asked to stop."""
        header = self._read(REQUEST.size)
        if header is None:
            return False
        magic, epoch, flags, rows, classes = REQUEST.unpack(header)
        expected = (len(self.harness.labels), self.harness.num_classes)
        if magic != REQUEST_MAGIC or flags & ~FROM_LOGITS or (rows, classes) != expected:
            raise ProtocolError(f"the training process sent a validation request that is not one (outputs {rows} x {classes}, "
                                f"expected {expected[0]} x {expected[1]})")
        payload = self._read(rows * classes * 4)
        if payload is None:
            return False
        values = np.frombuffer(payload, dtype="<f4").reshape(rows, classes)
        done = self.harness.answer(epoch, values, bool(flags & FROM_LOGITS))
        try:
            os.set_blocking(self._answers_write, False)  # a trainer that never reads its answers cannot block the runner
            os.write(self._answers_write, ANSWER.pack(ANSWER_MAGIC, done.epoch, LAST if done.last else 0, done.val_loss, done.val_accuracy))
        except BlockingIOError:
            raise ProtocolError("the training process does not read the harness's validation answers") from None
        return True

    def _read(self, size: int) -> bytes | None:
        """Exactly `size` bytes of the requests pipe; None at end-of-file or when asked to stop."""
        data = bytearray()
        poller = select.poll()
        poller.register(self._requests_read, select.POLLIN)
        while len(data) < size:
            if self._stop.is_set():
                return None
            if not poller.poll(POLL_MS):
                continue
            chunk = os.read(self._requests_read, min(READ_CHUNK, size - len(data)))
            if not chunk:
                if data:
                    raise ProtocolError("the training process ended in the middle of a validation request")
                return None
            data += chunk
        return bytes(data)
