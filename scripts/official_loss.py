"""The official DGS-Net stage-2 loss (HorizonTEL/DGS-Net, networks/trainer.py get_loss), shared by
make_torch_fixture.py (parity fixture) and torch_reference_step.py (GPU timing reference)."""
import torch
from torch import nn


def stage2_loss(f, ft, fx, img_fc, teacher, text_fc, labels, lam=0.2, eps=1e-6):
    """f: student features (with grad); ft, fx: detached teacher and text features, which must
    require grad (the official code takes autograd.grad with respect to them). Registers the
    Orthogonal Suppression hook on f. Returns (loss, l_img, l_text, l_help)."""
    bce = nn.BCEWithLogitsLoss()
    l_img = bce(img_fc(f).squeeze(1), labels)
    l_t = bce(teacher(ft).squeeze(1), labels)
    l_text = bce(text_fc(fx).squeeze(1), labels)
    g_img = torch.autograd.grad(l_t, ft, retain_graph=True)[0].detach()
    g_text = torch.autograd.grad(l_text, fx, retain_graph=True)[0].detach()
    g_help = torch.minimum(g_img, torch.zeros_like(g_img))
    l_help = (f * g_help).sum(dim=-1).mean()
    g_harm = torch.relu(g_text)
    g_harm = g_harm / (g_harm.norm(p=2, dim=-1, keepdim=True) + eps)
    f.register_hook(lambda grad: grad - (grad * g_harm).sum(-1, keepdim=True) * g_harm)
    return l_img + l_text + lam * l_help, l_img, l_text, l_help
