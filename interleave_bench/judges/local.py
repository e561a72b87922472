"""An in-process judge: a transformers vision-language model answering JudgeRequests locally.

No server, no API key, no cost: useful offline, for small open judges, and in tests. torch and
transformers are imported only when a ``LocalJudge`` is built, so importing this module is free.

The model runs in a worker thread (the event loop stays responsive) and never twice at once: an
asyncio lock orders callers and a thread lock guards the model itself, even across event loops.
With ``max_batch > 1``, greedy requests that wait together are generated in one left-padded batch.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import inspect
import re
import threading
import time
import weakref
from dataclasses import dataclass, field
from typing import Any

from ..media import decode_image
from .request import JudgeReply, JudgeRequest, Part

_DATA_URL = re.compile(r"data:(image/[\w.+-]+)?(;[\w=.+-]+)*?;base64,(.*)", re.DOTALL)
_MODEL_CLASSES = (
    "AutoModelForImageTextToText",
    "AutoModelForMultimodalLM",  # transformers v5
    "AutoModelForVision2Seq",  # transformers v4
    "AutoModelForCausalLM",  # text-only judges
)
_PREFLIGHT = JudgeRequest(parts=(Part.of_text("Reply with OK."),), max_tokens=1, temperature=0.0)


def image_from_data_url(url: str | None) -> Any:
    """Decode a ``data:image/...;base64,`` URL to a PIL image under the project's safety limits.

    Remote and file URLs are refused: a local judge must not fetch anything a request names.
    """
    m = _DATA_URL.fullmatch((url or "").strip())
    if m is None:
        shown = (url or "")[:40]
        raise ValueError(f"only base64 data: URLs are accepted as images, got {shown!r}")
    try:
        data = base64.b64decode(m.group(3), validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError(f"image data URL is not valid base64 ({e})") from None
    return decode_image(data, name="data URL").convert("RGB")


def _torch_dtype(torch: Any, name: str) -> Any:
    value = getattr(torch, name, None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"unknown dtype {name!r}: use e.g. float32, bfloat16, float16 or auto")
    return value


def _error(exc: BaseException, seconds: float = 0.0) -> JudgeReply:
    return JudgeReply(
        status="error", error=f"{type(exc).__name__}: {exc}", attempts=1, seconds=seconds
    )


@dataclass(eq=False)  # identity: a request may be queued twice
class _Pending:
    request: JudgeRequest
    conversation: list[dict[str, Any]]
    future: asyncio.Future[JudgeReply]
    taken: bool = False  # in a batch already (whose leader may have been cancelled)


@dataclass
class _LoopState:
    """Per event loop: asyncio locks and futures belong to the loop that created them."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    pending: list[_Pending] = field(default_factory=list)


class QueuedJudge:
    """What every in-process judge shares: requests queue per event loop, the model runs in a
    worker thread under a lock, and waiting greedy requests may form one batch. Subclasses say
    how a request is prepared (``_prepare``, off the loop) and how a batch is generated."""

    judge_path = "local"

    def __init__(self, model: str, *, max_batch: int = 1) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.model = model
        self.max_batch = max_batch
        self._thread_lock = threading.Lock()
        self._states: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopState] = (
            weakref.WeakKeyDictionary()
        )

    def describe(self) -> dict[str, Any]:
        """The manifest's account of how this judge computes (path, tile limit, dtype)."""
        return {"path": self.judge_path}

    def _prepare(self, request: JudgeRequest) -> Any:
        raise NotImplementedError

    def _generate_locked(self, batch: list[_Pending], start: float) -> list[JudgeReply]:
        raise NotImplementedError

    def _generate(self, batch: list[_Pending]) -> list[JudgeReply]:
        """Run one batch under the thread lock; every failure becomes error replies, never a raise."""
        start = time.perf_counter()
        try:
            with self._thread_lock:
                return self._generate_locked(batch, start)
        except Exception as e:
            if len(batch) > 1:  # one bad conversation must not fail its neighbours
                return [r for p in batch for r in self._generate([p])]
            return [_error(e, time.perf_counter() - start)]

    @property
    def parallelism(self) -> int:
        """Requests answered at once: one batch."""
        return self.max_batch

    # -- the JudgeBackend protocol ---------------------------------------------------------------

    async def complete(self, request: JudgeRequest) -> JudgeReply:
        """Answer one request; concurrent callers queue (and batch, if allowed), never overlap."""
        start = time.perf_counter()
        try:
            conv = await asyncio.to_thread(self._prepare, request)
        except Exception as e:
            return _error(e, time.perf_counter() - start)
        loop = asyncio.get_running_loop()
        state = self._states.get(loop)
        if state is None:
            state = self._states[loop] = _LoopState()
        item = _Pending(request, conv, loop.create_future())
        state.pending.append(item)
        try:
            async with state.lock:
                if not item.taken:
                    batch = self._take(state.pending, item)
                    task = asyncio.ensure_future(asyncio.to_thread(self._generate, batch))
                    task.add_done_callback(lambda t, b=batch: _deliver(t, b))
                    # shielded: if this caller is cancelled, the rest of its batch still gets answers
                    await asyncio.shield(task)
            reply = await item.future
        finally:
            if not item.taken and item in state.pending:  # cancelled while queued
                state.pending.remove(item)
        reply.seconds = time.perf_counter() - start
        return reply

    def _take(self, pending: list[_Pending], first: _Pending) -> list[_Pending]:
        """``first`` plus up to max_batch-1 waiting greedy requests (the longest max_tokens wins).

        Sampled requests run alone so that a seed reproduces the same answer whatever else waits.
        """
        batch = [first]
        if first.request.temperature == 0:
            for p in pending:
                if len(batch) >= self.max_batch:
                    break
                if p is not first and p.request.temperature == 0:
                    batch.append(p)
        for p in batch:
            pending.remove(p)
            p.taken = True
        return batch

    async def preflight(self) -> JudgeReply:
        """A one-token text-only request: proves the model loads, templates and generates."""
        return await self.complete(_PREFLIGHT)


class LocalJudge(QueuedJudge):
    """A JudgeBackend backed by a local transformers model (``model`` is the path or hub id).

    ``json_mode`` is not enforced (no constrained decoding); the scorer's parse and repair step
    handles a malformed answer as it does for any endpoint. Usage counts real tokens; cost is 0.
    """

    judge_path = "local-generic"

    def __init__(
        self,
        model_path: str,
        *,
        device: str = "auto",
        dtype: str | None = None,
        trust_remote_code: bool = False,
        max_batch: int = 1,
    ) -> None:
        import torch
        import transformers

        super().__init__(str(model_path), max_batch=max_batch)
        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.device = device
        kwargs: dict[str, Any] = {}
        if trust_remote_code:  # never implied: remote code runs with the user's rights
            kwargs["trust_remote_code"] = True
        self.processor = transformers.AutoProcessor.from_pretrained(self.model, **kwargs)
        if dtype is not None:
            kwargs["dtype"] = dtype if dtype == "auto" else _torch_dtype(torch, dtype)
        self._model = self._load_model(transformers, kwargs).to(device).eval()
        self.tokenizer = getattr(self.processor, "tokenizer", self.processor)
        # decoder-only batches must end where generation starts
        self.tokenizer.padding_side = "left"
        self.accepts_images = hasattr(self.processor, "image_processor")
        params = inspect.signature(self.processor.apply_chat_template).parameters
        # Judged text is untrusted model output: where supported, control tokens and image
        # placeholders inside it are encoded as plain text, so it cannot forge turns or images.
        self._sanitize = "sanitize_control_tokens" in params
        self._padding_via_kwargs = "processor_kwargs" in params and self.accepts_images

    def _load_model(self, transformers: Any, kwargs: dict[str, Any]) -> Any:
        """Try the auto classes from most to least specific; report the first failure if none fit."""
        first: Exception | None = None
        for name in _MODEL_CLASSES:
            auto = getattr(transformers, name, None)
            if auto is None:
                continue
            try:
                return auto.from_pretrained(self.model, **kwargs)
            except ValueError as e:  # "Unrecognized configuration class ... for this AutoModel"
                first = first or e
        raise first or RuntimeError("no transformers auto class can load this model")

    # -- request -> chat-template conversation ------------------------------------------------

    def conversation(self, request: JudgeRequest) -> list[dict[str, Any]]:
        """The request in the processor's chat format: content lists of text and PIL images."""
        conv: list[dict[str, Any]] = []
        for msg in request.messages(placeholders=False):
            content = msg["content"]
            if isinstance(content, str):
                items = [{"type": "text", "text": content}]
            else:
                items = []
                for c in content:
                    if c["type"] == "text":
                        items.append({"type": "text", "text": c["text"] or ""})
                    else:
                        items.append({"type": "image", "image": self._image(c["image_url"]["url"])})
            if not self.accepts_images:  # text-only templates usually expect a plain string
                conv.append({"role": msg["role"], "content": "".join(i["text"] for i in items)})
            else:
                conv.append({"role": msg["role"], "content": items})
        return conv

    def _prepare(self, request: JudgeRequest) -> list[dict[str, Any]]:
        return self.conversation(request)

    def _image(self, url: str) -> Any:
        if not self.accepts_images:
            raise ValueError(f"{self.model} has no image processor and cannot read images")
        return image_from_data_url(url)

    # -- generation (worker thread) --------------------------------------------------------------

    def _generate_locked(self, batch: list[_Pending], start: float) -> list[JudgeReply]:
        import torch

        req = batch[0].request  # a batch shares sampling settings (see _take)
        convs = [p.conversation for p in batch]
        extra: dict[str, Any] = {}
        if self._sanitize:
            extra["sanitize_control_tokens"] = True
        if len(batch) > 1:
            extra.update(
                {"processor_kwargs": {"padding": True}}
                if self._padding_via_kwargs
                else {"padding": True}
            )
        inputs = self.processor.apply_chat_template(
            convs if len(batch) > 1 else convs[0],
            add_generation_prompt=True,
            tokenize=True,
            return_dict=True,
            return_tensors="pt",
            **extra,
        )
        inputs = inputs.to(self.device)
        for k, v in inputs.items():  # pixel values must match the model's dtype (bf16 etc.)
            if torch.is_tensor(v) and torch.is_floating_point(v):
                inputs[k] = v.to(self._model.dtype)
        gen: dict[str, Any] = {"max_new_tokens": max(p.request.max_tokens for p in batch)}
        if req.temperature > 0:
            gen.update(do_sample=True, temperature=req.temperature)
            if req.seed is not None:
                torch.manual_seed(req.seed)
        else:
            gen["do_sample"] = False
        if self.tokenizer.pad_token_id is None and self.tokenizer.eos_token_id is not None:
            gen["pad_token_id"] = self.tokenizer.eos_token_id
        with torch.inference_mode():
            out = self._model.generate(**inputs, **gen)
        prompt_len = inputs["input_ids"].shape[1]
        mask = inputs.get("attention_mask")
        stops = self._stop_ids()
        replies = []
        for i, p in enumerate(batch):
            new = out[i, prompt_len:].tolist()
            stop = next((j for j, t in enumerate(new) if t in stops), None)
            new = new[
                : p.request.max_tokens if stop is None else min(stop + 1, p.request.max_tokens)
            ]
            prompt = int(mask[i].sum()) if mask is not None else prompt_len
            replies.append(
                JudgeReply(
                    status="ok",
                    text=self.tokenizer.decode(new, skip_special_tokens=True).strip(),
                    usage={"prompt_tokens": prompt, "completion_tokens": len(new)},
                    cost=0.0,
                    attempts=1,
                    seconds=time.perf_counter() - start,
                )
            )
        return replies

    def _stop_ids(self) -> set[int]:
        eos = getattr(getattr(self._model, "generation_config", None), "eos_token_id", None)
        if eos is None:
            eos = self.tokenizer.eos_token_id
        ids = eos if isinstance(eos, list | tuple) else [eos]
        return {int(i) for i in ids if i is not None}


def _deliver(task: asyncio.Future[list[JudgeReply]], batch: list[_Pending]) -> None:
    if task.cancelled():
        replies = [_error(asyncio.CancelledError("generation cancelled")) for _ in batch]
    elif task.exception() is not None:
        replies = [_error(task.exception()) for _ in batch]  # type: ignore[arg-type]
    else:
        replies = task.result()
    for p, r in zip(batch, replies, strict=True):
        if not p.future.done():
            p.future.set_result(r)
