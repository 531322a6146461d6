"""PyTorch versions of the reference architectures, with the reference's
module names, so that their state dicts have the layout of the authors' checkpoints
(the layout :mod:`rdinet_tf.models.torch_checkpoint` reads).

Each model's ``forward`` returns the list of all exits' logits, exit 1 first.
Needs the optional ``torch`` dependency (``pip install "rdinet_tf[torch]"``);
nothing in the package imports this module.
"""

import torch
from torch import nn


def _bn_relu(channels):
    return [nn.BatchNorm2d(channels), nn.ReLU()]


class SmallCNN(nn.Module):
    """MNIST SmallCNN, 3 exits (spec 4.1)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 3)
        self.conv2 = nn.Conv2d(32, 32, 3)
        self.conv3 = nn.Conv2d(32, 64, 3)
        self.conv4 = nn.Conv2d(64, 64, 3)
        self.fc1 = nn.Linear(1024, 200)
        self.fc2 = nn.Linear(200, 200)
        self.fc3 = nn.Linear(200, num_classes)
        self.drop = nn.Dropout(0.5)
        self.branch_layer1 = nn.Sequential(
            nn.Conv2d(32, 16, 3, stride=2), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(576, 200),
            nn.Dropout(0.5), nn.Linear(200, 200), nn.Linear(200, num_classes))
        self.branch_layer2 = nn.Sequential(
            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(1600, 200), nn.Dropout(0.5),
            nn.Linear(200, 200), nn.Linear(200, num_classes))

    def forward(self, x):
        x = torch.relu(self.conv1(x))
        exits = [self.branch_layer1(x)]
        x = torch.relu(self.conv3(nn.functional.max_pool2d(torch.relu(self.conv2(x)), 2)))
        exits.append(self.branch_layer2(x))
        x = nn.functional.max_pool2d(torch.relu(self.conv4(x)), 2).flatten(1)
        x = self.fc2(self.drop(torch.relu(self.fc1(x))))
        return exits + [self.fc3(torch.relu(x))]


class BasicBlock(nn.Module):
    def __init__(self, cin, cout, stride=1):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.downsample = None
        if stride != 1 or cin != cout:
            self.downsample = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                            nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x)))))
        return torch.relu(y + (x if self.downsample is None else self.downsample(x)))


def _pooled_linear(channels, num_classes, pool=8):
    return [nn.AvgPool2d(pool), nn.Flatten(), nn.Linear(channels, num_classes)]


class ResNet38(nn.Module):
    """CIFAR ResNet-38, 7 exits after blocks 1 and 4 of each group (spec 4.2)."""

    def __init__(self, num_classes=10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        cin = 16
        for g, width in enumerate((16, 32, 64)):
            for i in range(6):
                setattr(self, f"group{g}_layer{i}", BasicBlock(cin, width, 2 if g and not i else 1))
                cin = width
        self.fc = nn.Linear(64, num_classes)
        for k in (1, 2):
            setattr(self, f"branch_layer{k}", nn.Sequential(
                nn.MaxPool2d(2), nn.Conv2d(16, 64, 5, 1, 2, bias=False), *_bn_relu(64),
                nn.MaxPool2d(2), nn.Conv2d(64, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32),
                *_pooled_linear(32, num_classes)))
        for k in (3, 4):
            setattr(self, f"branch_layer{k}", nn.Sequential(
                nn.MaxPool2d(2), BasicBlock(32, 32), *_pooled_linear(32, num_classes)))
        for k in (5, 6):
            setattr(self, f"branch_layer{k}", nn.Sequential(*_pooled_linear(64, num_classes)))

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        exits = []
        for g in range(3):
            for i in range(6):
                x = getattr(self, f"group{g}_layer{i}")(x)
                if i in (1, 4):
                    exits.append(getattr(self, f"branch_layer{len(exits) + 1}")(x))
        return exits + [self.fc(nn.functional.adaptive_avg_pool2d(x, 1).flatten(1))]


class InvertedResidual(nn.Module):
    def __init__(self, cin, cout, expansion, stride):
        super().__init__()
        hidden = expansion * cin
        self.stride = stride
        self.conv1 = nn.Conv2d(cin, hidden, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(hidden)
        self.conv2 = nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False)
        self.bn2 = nn.BatchNorm2d(hidden)
        self.conv3 = nn.Conv2d(hidden, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride == 1 and cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = torch.relu(self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        y = self.bn3(self.conv3(y))
        return y + self.shortcut(x) if self.stride == 1 else y


class MobileNetV2(nn.Module):
    """CIFAR MobileNetV2, 7 exits after layer2, 5, 8, 10, 13, 16 (spec 4.3)."""

    CONFIG = ((1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2),
              (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
    EXITS = (2, 5, 8, 10, 13, 16)

    def __init__(self, num_classes=10):
        super().__init__()
        self.layer1 = nn.Conv2d(3, 32, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(32)
        number, cin = 2, 32
        for expansion, cout, count, stride in self.CONFIG:
            for i in range(count):
                setattr(self, f"layer{number}", InvertedResidual(cin, cout, expansion, stride if i == 0 else 1))
                number, cin = number + 1, cout
        self.layer19 = nn.Conv2d(320, 1280, 1, bias=False)
        self.conv2 = nn.Conv2d(320, 1280, 1, bias=False)  # unused, as in the reference
        self.bn2 = nn.BatchNorm2d(1280)
        self.linear = nn.Linear(1280, num_classes)
        self.branch_layer1 = nn.Sequential(
            InvertedResidual(16, 32, 6, 2), *_bn_relu(32), InvertedResidual(32, 64, 6, 2),
            nn.BatchNorm2d(64), *_pooled_linear(64, num_classes))
        self.branch_layer2 = nn.Sequential(InvertedResidual(32, 32, 6, 2), *_pooled_linear(32, num_classes))
        for k, channels in zip((3, 4, 5), (64, 64, 96)):
            setattr(self, f"branch_layer{k}", nn.Sequential(*_pooled_linear(channels, num_classes)))
        self.branch_layer6 = nn.Sequential(*_pooled_linear(160, num_classes, pool=4))

    def forward(self, x):
        x = torch.relu(self.bn1(self.layer1(x)))
        exits = []
        for number in range(2, 19):
            x = getattr(self, f"layer{number}")(x)
            if number in self.EXITS:
                exits.append(getattr(self, f"branch_layer{len(exits) + 1}")(x))
        x = torch.relu(self.bn2(self.layer19(x)))
        return exits + [self.linear(nn.functional.avg_pool2d(x, 4).flatten(1))]


REFERENCE_MODELS = {"smallcnn": SmallCNN, "resnet38": ResNet38, "mobilenetv2": MobileNetV2}
