"""The papers' extra experiments, apart from the pipeline's stages: the low-bit PACT study (`lowbit`), the
saliency-assisted QAT study (`saliency_qat`) and the explanation-sensitivity analysis (`sensitivity`). The two
low-bit studies reach the device through one path (`lowbit_device`), so a board that cannot run a 4-bit graph is
recorded the same way in both."""
