"""Engine selection: node facts and a ModelDeployment spec in, a Decision out. Pure, no I/O."""

from modeldeploy.selection.engine import select_engine
from modeldeploy.selection.nodes import NodesFileError, facts_from_document, node_facts, parse_nodes_document

__all__ = ["NodesFileError", "facts_from_document", "node_facts", "parse_nodes_document", "select_engine"]
