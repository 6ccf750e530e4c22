"""Meta-learning (元学习): few-shot tasks, MAML and prototypical networks."""
from .fewshot import MAML, ConvEncoder, ProtoNet, Task, TaskSampler, nearest_neighbour_accuracy, split_classes

__all__ = ["Task", "TaskSampler", "split_classes", "nearest_neighbour_accuracy", "MAML", "ProtoNet", "ConvEncoder"]
