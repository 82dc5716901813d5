"""torch-acdc: ACDC structured efficient linear layers (Moczulski et al., arXiv 1511.05946) for PyTorch."""
from .transform import dct, idct, dct_matrix
from .functional import acdc, acdc_reference
from . import compile_ops  # registers the torch_acdc:: custom ops used under torch.compile
from .layers import ACDC, StackedACDC
from .afdf import afdf, afdf_reference, AFDF, StackedAFDF

__all__ = ["dct", "idct", "dct_matrix", "acdc", "acdc_reference", "ACDC", "StackedACDC",
           "afdf", "afdf_reference", "AFDF", "StackedAFDF"]
from .conv import ACDCConv2d, ACDCSeparableConv2d
from .recurrent import ACDCLSTM, ACDCLSTMCell
from .conversion import convert, ConversionReport

__all__ += ["ACDCConv2d", "ACDCSeparableConv2d", "ACDCLSTM", "ACDCLSTMCell", "convert", "ConversionReport"]
__version__ = "0.1.0"
