"""The iBOT task for the one training loop: student and EMA teacher (encoder + head), centres as buffers.

One step (``forward``): photometric augmentation of the views on the device; the teacher encodes the unmasked
global views and projects every token; the student encodes the masked global views and the local views; the
student head projects only what the loss reads (CLS tokens and the masked patch tokens), which gives the same loss
and gradients as projecting every token. After the optimizer step (``on_after_step``) the teacher follows the
student by EMA with the cosine momentum schedule.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ..engine.task import StepState, Task
from ..models import VisionTransformer
from .augment import normalize, photometric, view_specs
from .config import PretrainConfig
from .heads import IBOTHead
from .health import HealthWatch, collapse_indicators
from .losses import (
    dino_cls_loss,
    ibot_patch_loss_sparse,
    koleo_loss,
    teacher_momentum,
    teacher_probs,
    teacher_temperature,
    updated_center,
)

__all__ = ["IBOTTask", "build_head"]


def build_head(cfg: PretrainConfig, dim: int, shared: bool) -> IBOTHead:
    """The iBOT head of ``cfg`` on an encoder of width ``dim``."""
    return IBOTHead(
        dim,
        cfg.out_dim,
        cfg.effective_patch_out_dim,
        cfg.head_hidden_dim,
        cfg.head_bottleneck_dim,
        cfg.head_layers,
        cfg.norm_last_layer,
        shared=shared,
        with_patch=cfg.mim,
    )


class IBOTTask(Task):
    """Student/teacher self-distillation with masked image modelling.

    Args:
        student: the student encoder (drop-path set).
        teacher: an encoder of the same architecture without drop-path; it starts as a copy of the student.
        cfg: objective, head, schedules.
        main: whether this process reports collapse warnings (the main one under torchrun).
    """

    def __init__(
        self, student: VisionTransformer, teacher: VisionTransformer, cfg: PretrainConfig, main: bool = True
    ) -> None:
        super().__init__()
        self.cfg = cfg
        self.health, self._health_scalars = HealthWatch(cfg.train.log_every, main), {}
        self.student = nn.ModuleDict({"backbone": student, "head": build_head(cfg, student.embed_dim, cfg.shared_head)})
        self.teacher = nn.ModuleDict(
            {"backbone": teacher, "head": build_head(cfg, teacher.embed_dim, cfg.shared_head_teacher)}
        )
        self.views = view_specs(cfg.color_jitter, cfg.color_jitter_p, cfg.grayscale_p, cfg.blur_p, cfg.solarize_p)
        t_params = dict(self.teacher.named_parameters())
        s_params = dict(self.student.named_parameters())
        self._common = sorted(set(t_params) & set(s_params))
        with torch.no_grad():
            for name in self._common:
                t_params[name].copy_(s_params[name])
        self.teacher.requires_grad_(False)
        if not cfg.mim:  # DINO: the mask token is never used (DDP requires every trainable tensor to be)
            student.mask_token.requires_grad_(False)
        self.register_buffer("center", torch.zeros(1, cfg.out_dim))
        self.register_buffer("center2", torch.zeros(1, 1, cfg.effective_patch_out_dim))

    def exported_encoder(self) -> VisionTransformer:
        """The encoder a run exports: the EMA teacher's backbone, as officially."""
        return self.teacher["backbone"]

    def temp_warmup(self, state: StepState) -> int:
        """Teacher-temperature warm-up epochs, capped at the run's length."""
        run_epochs = -(-state.total_steps // max(state.steps_per_epoch, 1))
        return min(self.cfg.warmup_teacher_temp_epochs, run_epochs)

    # -- optimisation hooks -------------------------------------------------------------------------------------
    def param_groups(self) -> list[dict[str, Any]]:
        """Official groups: weight decay on every student tensor except biases and 1-D tensors."""
        decay, no_decay = [], []
        for name, p in self.student.named_parameters():
            if p.requires_grad:
                (no_decay if name.endswith(".bias") or p.ndim == 1 else decay).append(p)
        return [
            g for g in ({"params": decay, "apply_wd": True}, {"params": no_decay, "apply_wd": False}) if g["params"]
        ]

    def before_optimizer_step(self, state: StepState) -> None:
        """Clip (per parameter as officially, or globally) and freeze the last layer in the first epochs."""
        params = [p for p in self.student.parameters() if p.grad is not None]
        clip = self.cfg.train.clip_grad  # the task clips (both modes); the loop is given none
        if clip and self.cfg.clip_mode == "global":
            torch.nn.utils.clip_grad_norm_(params, clip)
        elif clip:
            norms = torch._foreach_norm([p.grad for p in params])
            scales = [(clip / (n + 1e-6)).clamp(max=1.0) for n in norms]
            torch._foreach_mul_([p.grad for p in params], scales)
        if state.epoch < self.cfg.freeze_last_layer:
            for name, p in self.student.named_parameters():
                if "last_layer" in name:
                    p.grad = None

    @torch.no_grad()
    def on_after_step(self, state: StepState) -> None:
        """EMA update of the teacher with the cosine momentum schedule (0.996 -> 1 per iteration)."""
        self.health.after_step(state.step, state.total_steps, self._health_scalars)
        m = teacher_momentum(state.step, state.total_steps, self.cfg.momentum_teacher)
        t_params, s_params = dict(self.teacher.named_parameters()), dict(self.student.named_parameters())
        t = [t_params[n] for n in self._common]
        s = [s_params[n].detach() for n in self._common]
        torch._foreach_mul_(t, m)
        torch._foreach_add_(t, s, alpha=1.0 - m)

    # -- the step -----------------------------------------------------------------------------------------------
    def _views(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor | None]:
        """Augmented, normalised global views ``[G*B, 3, S, S]`` (view-major) and local views or None."""
        mean, std = batch["mean"], batch["std"]
        with torch.autocast(mean.device.type, enabled=False):
            g = batch["global"].float().div_(255.0)  # [B, G, 3, S, S]
            views = [normalize(photometric(g[:, v], self.views[min(v, 1)]), mean, std) for v in range(g.shape[1])]
            local = None
            if batch["local"].shape[1]:
                lo = batch["local"].float().div_(255.0)
                local = torch.cat(
                    [normalize(photometric(lo[:, v], self.views[2]), mean, std) for v in range(lo.shape[1])]
                )
        return torch.cat(views), local

    def _teacher(self, x: Tensor) -> tuple[Tensor, Tensor | None, Tensor]:
        """Teacher CLS logits ``[G*B, K]``, patch logits ``[G*B, N, Kp]`` (None without MIM) and the teacher's
        CLS features ``[G*B, D]`` (for the collapse indicators)."""
        with torch.no_grad():
            tokens = self.teacher["backbone"](x).tokens
            head: IBOTHead = self.teacher["head"]
            if not self.cfg.mim:
                return head.cls_logits(head.project(tokens[:, 0])), None, tokens[:, 0]
            return (*head(tokens), tokens[:, 0])

    def forward(self, batch: dict[str, Tensor], state: StepState) -> dict[str, Tensor]:
        """One iBOT step on ``batch`` (see :class:`~visionfm.pretrain.data.PretrainDataset`); returns losses."""
        x, local = self._views(batch)
        n_global, b = batch["global"].shape[1], batch["global"].shape[0]
        mask = batch["mask"].transpose(0, 1).reshape(n_global * b, *batch["mask"].shape[-2:]) if self.cfg.mim else None
        out = self.losses(x, local, mask, n_global, state)
        out["bad_images"] = batch["bad"].sum().float()
        return out

    def losses(
        self, x: Tensor, local: Tensor | None, mask: Tensor | None, n_global: int, state: StepState
    ) -> dict[str, Tensor]:
        """The objective on augmented views; updates the centres.

        Args:
            x: global views ``[G*B, 3, S, S]``, view-major.
            local: local views ``[L*B, 3, s, s]`` or None.
            mask: ``[G*B, rows, cols]`` bool patch masks of the global views (None: DINO).
            n_global: G.
            state: where training is (epoch for the temperatures).
        """
        cfg, b = self.cfg, x.shape[0] // n_global
        flat = mask.flatten(1) if mask is not None else None  # [G*B, N]
        t_cls, t_patch, t_feats = self._teacher(x)
        student, head = self.student["backbone"], self.student["head"]
        s_tokens = student(x, mask=mask).tokens  # [G*B, 1+N, D]
        parts = [s_tokens[:, 0]]
        if local is not None:
            parts.append(student(local).tokens[:, 0])
        if flat is not None:
            parts.append(s_tokens[:, 1:][flat])  # [M, D] masked patch tokens only
        z = head.project(torch.cat(parts))
        n_cls = x.shape[0] + (local.shape[0] if local is not None else 0)
        s_cls = head.cls_logits(z[:n_cls])

        warm = self.temp_warmup(state)
        temp = teacher_temperature(state.epoch, cfg.warmup_teacher_temp, cfg.teacher_temp, warm)
        t_probs = teacher_probs(t_cls, self.center, temp)
        cls_loss = dino_cls_loss(s_cls, t_probs, n_global, cfg.student_temp)
        entropy = -(t_probs * t_probs.clamp_min(1e-12).log()).sum(-1).mean()  # ln K: uniform collapse
        out = {
            "cls_loss": cls_loss,
            "teacher_entropy": entropy,
            "teacher_temp": torch.tensor(temp),
            "teacher_entropy_ratio": entropy.detach() / math.log(cfg.out_dim),
            **collapse_indicators(t_feats[:b].float()),
        }  # one view: two views of an image are not two images
        self._health_scalars = {k: out[k] for k in ("teacher_entropy_ratio", "feature_std", "effective_rank")}
        loss = cfg.lambda1 * cls_loss
        if cfg.koleo_weight:
            koleo = sum(koleo_loss(c) for c in s_tokens[:, 0].chunk(n_global))  # summed over views, as DINOv2
            loss = loss + cfg.koleo_weight * koleo
            out["koleo_loss"] = koleo
        if flat is not None:
            temp2 = teacher_temperature(state.epoch, cfg.warmup_teacher_patch_temp, cfg.teacher_patch_temp, warm)
            s_patch = head.patch_logits(z[n_cls:])
            t_masked = teacher_probs(t_patch[flat], self.center2[0], temp2)
            patch_loss = ibot_patch_loss_sparse(
                s_patch, t_masked, torch.nonzero(flat)[:, 0], flat.sum(1).view(n_global, b), cfg.student_temp
            )
            loss = loss + cfg.lambda2 * patch_loss
            out.update(patch_loss=patch_loss, mask_ratio=flat.float().mean())
            self.center2.copy_(updated_center(self.center2, t_patch, cfg.center_momentum))
        self.center.copy_(updated_center(self.center, t_cls, cfg.center_momentum))
        out["loss"] = loss
        return out
