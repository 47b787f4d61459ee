"""Cell phenotypes of the tissue simulator: their look in H&E and their markers in mIF.

One table (:data:`PHENOTYPES`) holds, per phenotype, the nucleus shape (semi-axes in µm and how
much they vary), how far the cell body reaches beyond the nucleus, the stain amounts of nucleus
and cytoplasm, and the probability that each channel is positive. Morphology is chosen so that it
carries the information a translator must learn: lymphocytes small, round, dark with scant
cytoplasm; plasma cells with abundant purple cytoplasm; macrophages large with pale foamy
cytoplasm and pale oval nuclei; tumour cells big, pleomorphic, vesicular; smooth muscle and
fibroblasts spindle-shaped; endothelium flat around lumens; mast cells granular; apoptotic cells
small, pyknotic and hypereosinophilic; mitotic figures dark elongated chromatin plates.

Marker probabilities of 1 are the defining markers; values below 1 are "some" (e.g. PD-1 on a
third of CD8 T cells). DAPI is positive on every nucleated cell; TRITC and Cy5 are weak noise.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from virtime.channels import CHANNEL_NAMES

__all__ = ["Phenotype", "PHENOTYPES", "PHENOTYPE_NAMES", "BACKGROUND_NOISE"]

#: Probability that a nucleated cell is positive in each background channel (autofluorescence).
BACKGROUND_NOISE: dict[str, float] = {"TRITC": 0.03, "Cy5": 0.02}


@dataclass(frozen=True)
class Phenotype:
    """Appearance and markers of one cell type (lengths in µm, stain amounts in OD units)."""

    name: str
    nucleus: tuple[float, float]  # semi-axes (major, minor)
    variation: float  # relative s.d. of the semi-axes (pleomorphism)
    body: float  # cell body reach beyond the nucleus
    nucleus_h: float  # hematoxylin in the nucleus
    texture: float  # chromatin texture amplitude (relative)
    rim: float  # extra hematoxylin at the nuclear membrane (vesicular nuclei)
    cyto_h: float  # hematoxylin (basophilia) of the cytoplasm
    cyto_e: float  # eosin of the cytoplasm
    cyto_texture: float  # cytoplasm texture (foamy macrophages, granular mast cells)
    markers: dict[str, float] = field(default_factory=dict)
    nucleated: bool = True


PHENOTYPES: dict[str, Phenotype] = {
    p.name: p
    for p in (
        Phenotype("tumour", (5.5, 4.3), 0.22, 4.0, 0.85, 0.35, 0.6, 0.10, 0.55, 0.1,
                  {"CK": 1.0, "Ki67": 0.25, "PD-L1": 0.15}),
        Phenotype("mitotic", (4.5, 1.8), 0.15, 5.0, 2.0, 0.5, 0.0, 0.05, 0.35, 0.1,
                  {"CK": 1.0, "PHH3-B": 1.0, "Ki67": 1.0}),
        Phenotype("apoptotic", (2.0, 1.9), 0.15, 2.5, 2.2, 0.2, 0.0, 0.05, 1.05, 0.1,
                  {"Caspase3-D": 1.0, "CK": 0.6}),
        Phenotype("cd8_t", (3.1, 2.9), 0.07, 0.8, 1.45, 0.12, 0.1, 0.05, 0.30, 0.0,
                  {"CD3": 1.0, "CD8": 1.0, "PD-1": 0.3}),
        Phenotype("cd4_t", (3.3, 3.0), 0.07, 0.9, 1.40, 0.12, 0.1, 0.05, 0.30, 0.0,
                  {"CD3": 1.0, "CD4": 1.0, "T-bet": 1.0}),
        Phenotype("b_cell", (3.5, 3.3), 0.07, 0.9, 1.35, 0.15, 0.1, 0.05, 0.28, 0.0,
                  {"CD20": 1.0}),
        Phenotype("plasma", (3.0, 2.7), 0.08, 4.0, 1.25, 0.45, 0.5, 0.40, 0.30, 0.0,
                  {"CD138": 1.0}),
        Phenotype("macrophage", (4.6, 2.9), 0.15, 6.5, 0.70, 0.15, 0.2, 0.04, 0.22, 0.35,
                  {"CD68": 1.0, "CD14": 0.8, "CD11c": 0.6, "CD16": 0.5, "PD-L1": 0.3}),
        Phenotype("endothelium", (5.0, 1.4), 0.12, 1.5, 1.05, 0.1, 0.0, 0.05, 0.45, 0.0,
                  {"CD34": 1.0}),
        Phenotype("mast", (3.0, 2.9), 0.08, 4.0, 1.10, 0.1, 0.0, 0.55, 0.30, 0.45,
                  {"Tryptase": 1.0}),
        Phenotype("smooth_muscle", (7.0, 1.5), 0.12, 2.5, 0.90, 0.1, 0.0, 0.03, 1.00, 0.05,
                  {"Actin-D": 1.0, "Transgelin": 1.0}),
        Phenotype("fibroblast", (6.0, 1.2), 0.2, 0.8, 1.00, 0.1, 0.0, 0.03, 0.50, 0.0, {}),
        Phenotype("rbc", (3.6, 3.4), 0.05, 0.0, 0.0, 0.0, 0.0, 0.0, 1.25, 0.0, {},
                  nucleated=False),
    )
}

PHENOTYPE_NAMES: tuple[str, ...] = tuple(PHENOTYPES)

for _p in PHENOTYPES.values():  # the table must name real channels
    for _c in _p.markers:
        assert _c in CHANNEL_NAMES, (_p.name, _c)
