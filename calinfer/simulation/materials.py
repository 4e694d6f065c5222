"""Materials and the effective medium of a two-component sampling calorimeter.

Material constants are the PDG values (Review of Particle Physics, "Atomic and nuclear properties of
materials"). The effective quantities of an absorber/active stack follow Grindhammer & Peters
(hep-ex/0001020, section 4): mass-fraction weights ``w_i = rho_i d_i / sum_j rho_j d_j`` and

* ``Z_eff = sum w_i Z_i``;
* ``1/X0_eff = sum f_i / X0_i`` with thickness fractions ``f_i`` (lengths in mm);
* ``1/R_M,eff = sum f_i / R_M,i`` and ``E_c,eff = X0_eff sum f_i E_c,i / X0_i``;
* sampling frequency ``F_S = X0_eff / (d_abs + d_act)`` and ``e/mip = 1 / (1 + 0.007 (Z_abs - Z_act))``.

The electron sampling fraction is ``(e/mip) x`` the minimum-ionising sampling fraction, and the stochastic
sampling term uses the usual estimate ``sigma/E = 2.7% sqrt(d_act[mm] / f_mip) / sqrt(E/GeV)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

__all__ = ["CALOGAN_STACK", "LEAD", "LIQUID_ARGON", "Material", "SamplingStack"]


@dataclass(frozen=True)
class Material:
    """A homogeneous material.

    Attributes: atomic number ``Z``, mass number ``A`` (g/mol), ``density`` (g/cm^3), radiation length
    ``x0_mm``, critical energy ``critical_energy_mev`` (electrons), Moliere radius ``moliere_mm``, minimum
    ionisation loss ``dedx_mip`` (MeV cm^2/g) and nuclear interaction length ``lambda_int_mm``.
    """

    name: str
    Z: float
    A: float
    density: float
    x0_mm: float
    critical_energy_mev: float
    moliere_mm: float
    dedx_mip: float
    lambda_int_mm: float

    @property
    def mip_loss_mev_per_mm(self) -> float:
        """Minimum-ionising energy loss per mm (MeV/mm)."""
        return self.dedx_mip * self.density / 10.0


LEAD = Material("Pb", 82.0, 207.2, 11.35, 5.612, 7.43, 16.02, 1.122, 175.9)
LIQUID_ARGON = Material("LAr", 18.0, 39.948, 1.396, 140.0, 32.84, 90.43, 1.519, 857.7)


@dataclass(frozen=True)
class SamplingStack:
    """A periodic stack of ``n_layers`` x (``absorber_mm`` absorber + ``active_mm`` active material)."""

    absorber: Material
    active: Material
    absorber_mm: float
    active_mm: float
    n_layers: int

    @property
    def period_mm(self) -> float:
        return self.absorber_mm + self.active_mm

    @property
    def depth_mm(self) -> float:
        """Total depth of the stack (mm)."""
        return self.n_layers * self.period_mm

    @cached_property
    def mass_weights(self) -> tuple[float, float]:
        """Mass fractions ``(w_absorber, w_active)``."""
        m_abs = self.absorber.density * self.absorber_mm
        m_act = self.active.density * self.active_mm
        return m_abs / (m_abs + m_act), m_act / (m_abs + m_act)

    @property
    def thickness_fractions(self) -> tuple[float, float]:
        return self.absorber_mm / self.period_mm, self.active_mm / self.period_mm

    @property
    def z_eff(self) -> float:
        """Mass-weighted effective atomic number."""
        w_abs, w_act = self.mass_weights
        return w_abs * self.absorber.Z + w_act * self.active.Z

    @property
    def x0_mm(self) -> float:
        """Effective radiation length (mm)."""
        f_abs, f_act = self.thickness_fractions
        return 1.0 / (f_abs / self.absorber.x0_mm + f_act / self.active.x0_mm)

    @property
    def moliere_mm(self) -> float:
        """Effective Moliere radius (mm)."""
        f_abs, f_act = self.thickness_fractions
        return 1.0 / (f_abs / self.absorber.moliere_mm + f_act / self.active.moliere_mm)

    @property
    def critical_energy_mev(self) -> float:
        """Effective critical energy (MeV)."""
        f_abs, f_act = self.thickness_fractions
        return self.x0_mm * (
            f_abs * self.absorber.critical_energy_mev / self.absorber.x0_mm
            + f_act * self.active.critical_energy_mev / self.active.x0_mm
        )

    @property
    def lambda_int_mm(self) -> float:
        """Effective nuclear interaction length (mm)."""
        f_abs, f_act = self.thickness_fractions
        return 1.0 / (f_abs / self.absorber.lambda_int_mm + f_act / self.active.lambda_int_mm)

    @property
    def sampling_frequency(self) -> float:
        """``F_S = X0_eff / (d_abs + d_act)``: sampling layers per radiation length."""
        return self.x0_mm / self.period_mm

    @property
    def e_over_mip(self) -> float:
        """Electron to minimum-ionising response ratio ``1 / (1 + 0.007 (Z_abs - Z_act))``."""
        return 1.0 / (1.0 + 0.007 * (self.absorber.Z - self.active.Z))

    @property
    def mip_sampling_fraction(self) -> float:
        """Fraction of a minimum-ionising particle's loss that is deposited in the active layers."""
        act = self.active.mip_loss_mev_per_mm * self.active_mm
        return act / (act + self.absorber.mip_loss_mev_per_mm * self.absorber_mm)

    @property
    def sampling_fraction(self) -> float:
        """Fraction of an electromagnetic shower's energy deposited in the active layers."""
        return self.e_over_mip * self.mip_sampling_fraction

    @property
    def stochastic_term(self) -> float:
        """Sampling resolution ``a`` in ``sigma/E = a / sqrt(E/GeV)``, ``0.027 sqrt(d_act[mm] / f_mip)``."""
        return 0.027 * math.sqrt(self.active_mm / self.mip_sampling_fraction)

    @property
    def depth_x0(self) -> float:
        return self.depth_mm / self.x0_mm

    def summary(self) -> dict[str, float]:
        """The effective quantities as a flat dictionary (stored in file metadata)."""
        return {
            "absorber": self.absorber.name,
            "active": self.active.name,
            "absorber_mm": self.absorber_mm,
            "active_mm": self.active_mm,
            "n_layers": self.n_layers,
            "z_eff": round(self.z_eff, 4),
            "x0_mm": round(self.x0_mm, 4),
            "moliere_mm": round(self.moliere_mm, 4),
            "critical_energy_mev": round(self.critical_energy_mev, 4),
            "sampling_frequency": round(self.sampling_frequency, 4),
            "e_over_mip": round(self.e_over_mip, 4),
            "sampling_fraction": round(self.sampling_fraction, 5),
            "stochastic_term": round(self.stochastic_term, 5),
        }  # type: ignore[return-value]


CALOGAN_STACK = SamplingStack(LEAD, LIQUID_ARGON, absorber_mm=2.0, active_mm=4.0, n_layers=80)
"""The CaloGAN calorimeter: 80 x (2 mm Pb + 4 mm LAr), 480 mm deep."""
