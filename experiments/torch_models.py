"""The benchmark's PyTorch twins: the lecture's VAE and target propagation written in PyTorch
eager, with the same architecture, initialisation distribution, loss and optimiser as this
project's models (``experiments/vae.py``, ``experiments/target_prop.py``).

Imported only by the benchmark; torch comes with the ``bench`` extra (torch==2.13.0, CPU).
"""

from __future__ import annotations

import math


def flax_init_(module) -> None:
  """Flax's Dense initialisation (LeCun normal, truncated at 2σ; zero bias) for every
  torch Linear, so that both frameworks train the same model from the same distribution."""
  import torch

  for layer in module.modules():
    if isinstance(layer, torch.nn.Linear):
      std = math.sqrt(1.0 / layer.in_features) / 0.87962566103423978
      torch.nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
      torch.nn.init.zeros_(layer.bias)


def torch_available() -> bool:
  try:
    import torch  # noqa: F401
  except ImportError:
    return False
  return True


class TorchVAE:
  """784-400-(20, 20) / 20-400-784, ReLU, Bernoulli logits; loss mean_b[C + β KL]."""

  def __init__(self, *, hidden=400, latent=20, d_in=784, lr=1e-3, beta=1.0, seed=0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    self.torch, self.latent, self.beta = torch, latent, beta
    self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, 2 * latent))
    self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d_in))
    flax_init_(self.encoder)
    flax_init_(self.decoder)
    params = list(self.encoder.parameters()) + list(self.decoder.parameters())
    self.opt = torch.optim.Adam(params, lr=lr)

  def terms(self, y):
    torch = self.torch
    stats = self.encoder(y)
    mu, logvar = stats[:, :self.latent], stats[:, self.latent:]
    z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
    logits = self.decoder(z)
    c = torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none").sum(-1)
    kl = 0.5 * (torch.exp(logvar) - logvar - 1 + mu**2).sum(-1)
    return c, kl

  def step(self, y):
    c, kl = self.terms(y)
    loss = (c + self.beta * kl).mean()
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss

  def nelbo(self, y) -> float:
    with self.torch.no_grad():
      c, kl = self.terms(y)
    return float((c + kl).mean())


class TorchTargetProp:
  """Encoder 784-256-64, decoder 64-256-784 (sigmoid); ž by ``inner_steps`` of SGD with
  Nesterov momentum ``inner_momentum`` (optax's ``sgd(lr, momentum, nesterov=True)``: t ← g + μt,
  z ← z − η(g + μt); μ = 0 is plain SGD) on E = C + λ‖z‖₁ + ‖z − z̃‖²; then Adam on E(y, ž)
  with ž fixed. The defaults are experiments/target_prop.py's."""

  def __init__(self, *, inner_steps=20, inner_lr=0.02, inner_momentum=0.9, l1=0.05,
               d_weight=1.0, hidden=256, latent=64, d_in=784, lr=1e-3, seed=0):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    self.torch = torch
    self.inner_steps, self.inner_lr, self.l1, self.d_weight = inner_steps, inner_lr, l1, d_weight
    self.inner_momentum = inner_momentum
    self.encoder = nn.Sequential(nn.Linear(d_in, hidden), nn.ReLU(), nn.Linear(hidden, latent))
    self.decoder = nn.Sequential(nn.Linear(latent, hidden), nn.ReLU(), nn.Linear(hidden, d_in),
                                 nn.Sigmoid())
    flax_init_(self.encoder)
    flax_init_(self.decoder)
    params = list(self.encoder.parameters()) + list(self.decoder.parameters())
    self.opt = torch.optim.Adam(params, lr=lr)

  def energy(self, y, z, z_tilde):
    c = ((y - self.decoder(z)) ** 2).sum(-1)
    return c + self.l1 * z.abs().sum(-1) + self.d_weight * ((z - z_tilde) ** 2).sum(-1)

  def infer(self, y, z_tilde, trace=None):
    torch = self.torch
    z = z_tilde.detach().clone().requires_grad_(True)
    velocity = torch.zeros_like(z)
    for _ in range(self.inner_steps):
      e = self.energy(y, z, z_tilde.detach()).sum()
      (g,) = torch.autograd.grad(e, z)
      with torch.no_grad():
        velocity = g + self.inner_momentum * velocity
        z -= self.inner_lr * (g + self.inner_momentum * velocity)
      if trace is not None:
        trace.append(float(e) / y.shape[0])
    return z.detach()

  def step(self, y):
    z_tilde = self.encoder(y)
    z_check = self.infer(y, z_tilde)
    loss = self.energy(y, z_check, z_tilde).mean()
    self.opt.zero_grad(set_to_none=True)
    loss.backward()
    self.opt.step()
    return loss
