"""Models: ``create_model`` builds any of them; ``model_input`` says what input they expect."""

from cnnlab.models.factory import ModelInput, create_model, model_input
from cnnlab.models.registry import ALIASES, own_model_names, register_model, resolve_name

__all__ = ["ALIASES", "ModelInput", "create_model", "model_input", "own_model_names", "register_model", "resolve_name"]
