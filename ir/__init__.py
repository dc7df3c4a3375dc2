"""braze IR: typed, immutable dataflow graphs of registered ops."""
from braze.ir.types import DTYPE_NAMES, Dim, Sym, TensorType, dim_mul, eval_dim, sym  # noqa: F401
from braze.ir.graph import Graph, Node, Value, iter_values, map_syms, map_values  # noqa: F401
from braze.ir.registry import (REGISTRY, Category, OpDef, category, get_op, is_category,  # noqa: F401
                               lookup_packet, register, register_op)
from braze.ir import aten_ops as _aten_ops, builtin_ops as _builtin_ops, attention as _attention, padding as _padding  # noqa: F401,E402,E501
from braze.ir import inplace_ops as _inplace_ops, attention_varlen as _attention_varlen  # noqa: F401,E402
from braze.ir import quant as _quant, cache_write as _cache_write  # noqa: F401,E402
from braze.ir.infer import TypeInferenceError, infer_types  # noqa: F401,E402
from braze.ir.builder import Builder, eliminate_dead, rewrite  # noqa: F401,E402
from braze.ir.interpreter import BindError, bind_symbols, concretize, interpret, random_inputs  # noqa: F401,E402
from braze.ir.verify import VerificationError, verify  # noqa: F401,E402
from braze.ir.printer import format_type, print_graph  # noqa: F401,E402

Graph.__str__ = print_graph  # the text form (ir/printer.py); graph.py cannot import its printer
from braze.ir.parser import ParseError, parse_graph, parse_type  # noqa: F401,E402
from braze.ir.nxview import find_cycle, reachable, to_dot, to_networkx, topological_order  # noqa: F401,E402
