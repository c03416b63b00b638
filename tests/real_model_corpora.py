"""Two small corpora for the real-model tests: texts from many domains, and rewordings of one text.

Written for these tests. A judge that discriminates at all should find more clusters in the first.
"""

MANY_DOMAINS = [
    "The mitochondrion turns sugar and oxygen into ATP, the molecule that powers almost every process in a cell.",
    "To keep a sourdough starter alive, feed it equal weights of flour and water every day and keep it warm.",
    "The Treaty of Westphalia in 1648 ended the Thirty Years' War and shaped the idea of sovereign states.",
    "A binary search halves the sorted list at every step, so it finds an item in logarithmic time.",
    "When the central bank raises interest rates, borrowing costs more and spending usually slows down.",
    "Our team scored twice in the last ten minutes and won the championship final three goals to two.",
    "Water the tomato plants at the base in the early morning so the leaves stay dry and free of mould.",
    "The tenant must give the landlord written notice at least thirty days before moving out of the flat.",
    "A major scale follows the pattern whole, whole, half, whole, whole, whole, half between its notes.",
    "Jupiter is the largest planet of the solar system and has a storm larger than the whole Earth.",
    "Check the tyre pressure once a month; under-inflated tyres wear out faster and waste fuel.",
    "The poem's last stanza returns to the image of the empty harbour, now seen at dawn instead of dusk.",
]

ONE_TEXT_REWORDED = [
    "The mitochondrion turns sugar and oxygen into ATP, the molecule that powers almost every process in a cell.",
    "Mitochondria convert sugar and oxygen into ATP, which fuels nearly all of a cell's processes.",
    "In the cell, the mitochondrion uses oxygen to change sugar into ATP, the energy molecule of the cell.",
    "ATP, the energy carrier of the cell, is made in the mitochondria from sugar and oxygen.",
    "Cells get their energy from mitochondria, which make ATP out of sugar and oxygen.",
    "Sugar and oxygen are turned into ATP by the mitochondrion, powering the work of the cell.",
    "The powerhouse of the cell, the mitochondrion, produces ATP from glucose and oxygen.",
    "Mitochondria take in glucose and oxygen and give the cell ATP to run its processes.",
    "Almost every process in a cell runs on ATP, which mitochondria make from sugar and oxygen.",
    "Using oxygen, mitochondria break down sugar and store the energy as ATP for the cell.",
    "A cell's mitochondria burn sugar with oxygen and produce ATP, its energy currency.",
    "The mitochondrion is where sugar and oxygen become ATP, the fuel of cellular processes.",
]
