"""One-time import that wrote ``src/ecgfm/labels/data/catalogue.csv`` from its sources.

The CSV is the source of truth: clinicians edit it directly, one condition per row. This script
only records how the first version was assembled (and re-checks it against the sources); it
refuses to overwrite an existing catalogue unless given ``--force``, so edits made in the CSV
are never lost to a re-run.

Sources (under the shared data folder, ``../shared/data`` or ``$ECGFM_DATA``):
- ``ptb-xl/scp_statements.csv``: the 71 PTB-XL statements, their AHA codes and their
  diagnostic/form/rhythm membership and diagnostic super/subclass;
- ``challenge2021/dx_mapping_scored.csv`` and ``dx_mapping_unscored.csv``: every SNOMED CT code
  of the PhysioNet/CinC 2020-2021 challenges, with ``weights.csv`` for its equivalence pairs;
- the statements of LUDB, MIT-BIH rhythm notes, CinC 2017 classes and CPSC 2021 (the mappers in
  ``ecgfm.labels.mappers`` hold those tables; the few conditions they need are added here).

Usage: ``python tools/build_label_catalogue.py [--force] [--out PATH]``
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("ECGFM_DATA", ROOT.parent / "shared" / "data"))
OUT = ROOT / "src" / "ecgfm" / "labels" / "data" / "catalogue.csv"
VERSION = "2026.11"
COLUMNS = [
    "id", "name", "category", "parent", "synonyms_en", "synonyms_de", "scp", "snomed", "aha",
    "ptbxl_groups", "description",
]


@dataclass
class Entry:
    id: str
    category: str
    parent: str = ""
    en: str = ""
    de: str = ""
    snomed: str = ""
    name: str = ""  # empty: the PTB-XL statement description
    note: str = ""


E = Entry

# -- PTB-XL: the 71 statements, 5 superclasses and the subclasses that are not statements -------
# Diagnostic statements keep their PTB-XL subclass -> superclass chain; a few generic conditions
# (BBB, VH, AH, VPEX) are slotted between a subclass and its superclass, so every ancestor PTB-XL
# gives is still an ancestor. Form and rhythm statements never roll up into a diagnostic class.
PTBXL = [
    # superclasses
    E("NORM", "morphology", "", "normal ECG|normal electrocardiogram|normal tracing|within normal limits",
      "normales EKG|sonst normales EKG|Normalbefund|EKG ohne pathologischen Befund", name="normal ECG",
      note="Overall statement; filed under morphology because the catalogue has no 'normal' category."),
    E("MI", "ischaemia", "", "myocardial infarction|infarction|infarct|MI",
      "Myokardinfarkt|Infarkt|Herzinfarkt|Infarktzeichen", "164865005", name="myocardial infarction",
      note="PTB-XL diagnostic superclass MI."),
    E("STTC", "repolarisation", "", "ST/T change|ST-T changes|ST-T abnormality|repolarisation abnormality",
      "ST-T-Veränderungen|Erregungsrückbildungsstörung|Repolarisationsstörung", name="ST/T change",
      note="PTB-XL diagnostic superclass STTC (and the subclass of the same name)."),
    E("CD", "conduction", "", "conduction disturbance|conduction abnormality|conduction defect",
      "Leitungsstörung|Erregungsleitungsstörung|Erregungsausbreitungsstörung", name="conduction disturbance",
      note="PTB-XL diagnostic superclass CD."),
    E("HYP", "hypertrophy", "", "hypertrophy|chamber enlargement|chamber hypertrophy",
      "Hypertrophie|Herzhypertrophie", name="hypertrophy", note="PTB-XL diagnostic superclass HYP."),
    # subclasses that are not statements
    E("ISCA", "ischaemia", "STTC", "anterior or lateral ischaemia|ischaemic ST-T changes in anterior or lateral leads",
      "anterolaterale Ischämie", name="ischaemic ST-T changes in anterior/lateral leads",
      note="PTB-XL diagnostic subclass of ISCAL, ISCAS, ISCLA, ISCAN."),
    E("ISCI", "ischaemia", "STTC", "inferior or inferolateral ischaemia|ischaemic ST-T changes in inferior leads",
      "inferiore Ischämie", name="ischaemic ST-T changes in inferior leads",
      note="PTB-XL diagnostic subclass of ISCIN, ISCIL."),
    E("_AVB", "conduction", "CD", "AV block|atrioventricular block|heart block",
      "AV-Block|A-V Block|atrioventrikulärer Block", "233917008", name="AV block",
      note="PTB-XL diagnostic subclass of 1AVB, 2AVB, 3AVB; SNOMED 'AV block'."),
    E("LAFB/LPFB", "conduction", "CD", "left fascicular block|left hemiblock|fascicular block",
      "Hemiblock|linksfaszikulärer Block|Faszikelblock", name="left anterior/posterior fascicular block",
      note="PTB-XL diagnostic subclass of LAFB and LPFB."),
    # diagnostic statements
    E("NDT", "repolarisation", "STTC", "non-diagnostic T abnormalities|flat T waves|T wave flattening|minor T wave changes",
      "T-Abflachung|abgeflachtes T|flaches T|T abnorm"),
    E("NST_", "repolarisation", "STTC",
      "non-specific ST changes|nonspecific ST-T changes|non-specific ST-T wave changes|minor non-specific ST-T changes|ST changes",
      "unspezifische ST-Veränderungen|unspezifische ST-T-Veränderungen|ST-Streckenveränderungen", "55930002",
      note="SNOMED 55930002 'ST changes' is this statement (the challenge's PTB-XL conversion used it for NST_)."),
    E("DIG", "systemic", "STTC", "digitalis effect|digoxin effect|ST changes due to digitalis",
      "Digitaliswirkung|Digitaliseffekt|muldenförmige ST-Senkung", name="digitalis effect"),
    E("LNGQT", "measurement", "STTC", "long QT interval|prolonged QT interval|QT prolongation|long QT",
      "QT-Verlängerung|verlängerte QT-Zeit|langes QT", "111975006", name="long QT interval"),
    E("IMI", "ischaemia", "MI",
      "inferior myocardial infarction|inferior infarction|inferior infarct|inferior MI|old inferior myocardial infarction",
      "inferiorer Infarkt|Hinterwandinfarkt|inferiorer Myokardinfarkt|diaphragmaler Infarkt|inferiorer Myokardschaden"),
    E("ASMI", "ischaemia", "AMI", "anteroseptal myocardial infarction|anteroseptal infarction|anteroseptal infarct|septal infarction",
      "anteroseptaler Infarkt|anteroseptaler Myokardschaden|Septuminfarkt|septaler Infarkt"),
    E("LVH", "hypertrophy", "VH", "left ventricular hypertrophy|LVH",
      "Linkshypertrophie|linksventrikuläre Hypertrophie|Linksherzhypertrophie|linksventrikuläre Hypertrophiezeichen",
      "164873001"),
    E("LAFB", "conduction", "LAFB/LPFB", "left anterior fascicular block|left anterior hemiblock|LAFB|LAHB",
      "linksanteriorer Hemiblock|linksanteriorer Faszikelblock|LAH", "445118002"),
    E("ISC_", "ischaemia", "STTC",
      "myocardial ischaemia|myocardial ischemia|ischaemic ST-T changes|ischemic changes|non-specific ischaemia",
      "Ischämie|Myokardischämie|ischämische ST-T-Veränderungen|Ischämiezeichen", "164861001",
      note="SNOMED 164861001 'myocardial ischaemia' is placed here, PTB-XL's unlocalised ischaemia "
           "statement (the localised ones are ISCA*/ISCI*).", name="non-specific ischaemic ST-T changes"),
    E("IRBBB", "conduction", "BBB", "incomplete right bundle branch block|IRBBB|partial right bundle branch block",
      "inkompletter Rechtsschenkelblock|unvollständiger Rechtsschenkelblock|inkompletter RSB", "713426002"),
    E("1AVB", "conduction", "_AVB", "first degree AV block|1st degree AV block|first-degree atrioventricular block|AV block I",
      "AV-Block I|A-V Block I|AV-Block I. Grades|AV-Block 1. Grades", "270492004"),
    E("IVCD", "conduction", "CD",
      "non-specific intraventricular conduction disturbance|intraventricular conduction delay|nonspecific intraventricular conduction disorder|IVCD|NSIVCB",
      "unspezifische intraventrikuläre Leitungsstörung|intraventrikuläre Leitungsverzögerung|intraventrikuläre Erregungsausbreitungsstörung",
      "698252002", name="non-specific intraventricular conduction disturbance"),
    E("ISCAL", "ischaemia", "ISCA", "anterolateral ischaemia|ischaemia in anterolateral leads|anterolateral ischemia",
      "anterolaterale Ischämie|Ischämie anterolateral", name="ischaemia in anterolateral leads"),
    E("CRBBB", "conduction", "BBB", "complete right bundle branch block|right bundle branch block|RBBB|CRBBB",
      "Rechtsschenkelblock|kompletter Rechtsschenkelblock|vollständiger Rechtsschenkelblock|RSB",
      "713427006|59118001",
      note="SNOMED 713427006 (complete RBBB) and 59118001 (RBBB) are one diagnosis in the challenge's weights.csv."),
    E("CLBBB", "conduction", "BBB", "complete left bundle branch block|left bundle branch block|LBBB|CLBBB",
      "Linksschenkelblock|kompletter Linksschenkelblock|vollständiger Linksschenkelblock|LSB|links vollständiger Schenkelblock",
      "733534002|164909002",
      note="SNOMED 733534002 (complete LBBB) and 164909002 (LBBB) are one diagnosis in the challenge's weights.csv."),
    E("ILMI", "ischaemia", "IMI", "inferolateral myocardial infarction|inferolateral infarction",
      "inferolateraler Infarkt|inferolateraler Myokardschaden"),
    E("LAO/LAE", "hypertrophy", "AH", "left atrial overload|left atrial enlargement|P mitrale|left atrial dilatation",
      "P-sinistrocardiale|P sinistroatriale|P mitrale|linksatriale Belastung|Linksvorhofvergrößerung|linksatriale Vergrößerung",
      "67741000119109", name="left atrial overload/enlargement",
      note="SNOMED 67741000119109 'left atrial enlargement'; 'left atrial hypertrophy' (LAH) and 'left "
           "atrial abnormality' (LAA) are separate SNOMED concepts, kept as children."),
    E("AMI", "ischaemia", "MI", "anterior myocardial infarction|anterior infarction|anterior wall infarction|anterior MI",
      "anteriorer Infarkt|Vorderwandinfarkt|anteriorer Myokardschaden", "54329005",
      note="Also the PTB-XL diagnostic subclass of the anterior infarctions (ASMI, ALMI, INJAS, INJAL, INJLA). "
           "Not 'acute MI' (that is ACUTE_MI)."),
    E("ALMI", "ischaemia", "AMI", "anterolateral myocardial infarction|anterolateral infarction",
      "anterolateraler Infarkt|anterolateraler Myokardschaden"),
    E("ISCIN", "ischaemia", "ISCI", "inferior ischaemia|ischaemia in inferior leads|inferior ischemia",
      "inferiore Ischämie|Ischämie inferior", "425419005", name="ischaemia in inferior leads"),
    E("INJAS", "ischaemia", "AMI", "subendocardial injury in anteroseptal leads|anteroseptal subendocardial injury",
      "anteroseptaler Innenschichtschaden|Innenschichtschaden anteroseptal"),
    E("LMI", "ischaemia", "MI", "lateral myocardial infarction|lateral infarction|high lateral infarction|lateral wall infarction",
      "lateraler Infarkt|hochlateraler Infarkt|Seitenwandinfarkt"),
    E("ISCIL", "ischaemia", "ISCI", "inferolateral ischaemia|ischaemia in inferolateral leads",
      "inferolaterale Ischämie", name="ischaemia in inferolateral leads"),
    E("LPFB", "conduction", "LAFB/LPFB", "left posterior fascicular block|left posterior hemiblock|LPFB|LPHB",
      "linksposteriorer Hemiblock|linksposteriorer Faszikelblock", "445211001"),
    E("ISCAS", "ischaemia", "ISCA", "anteroseptal ischaemia|ischaemia in anteroseptal leads",
      "anteroseptale Ischämie", name="ischaemia in anteroseptal leads"),
    E("INJAL", "ischaemia", "AMI", "subendocardial injury in anterolateral leads|anterolateral subendocardial injury",
      "anterolateraler Innenschichtschaden"),
    E("ISCLA", "ischaemia", "ISCA", "lateral ischaemia|ischaemia in lateral leads|lateral ischemia",
      "laterale Ischämie|hochlaterale Ischämie", "425623009", name="ischaemia in lateral leads"),
    E("RVH", "hypertrophy", "VH", "right ventricular hypertrophy|RVH",
      "Rechtshypertrophie|rechtsventrikuläre Hypertrophie|Rechtsherzhypertrophie", "89792004"),
    E("ANEUR", "ischaemia", "STTC", "ventricular aneurysm|left ventricular aneurysm|ST-T changes compatible with ventricular aneurysm",
      "Ventrikelaneurysma|Herzwandaneurysma|Aneurysma"),
    E("RAO/RAE", "hypertrophy", "AH", "right atrial overload|right atrial enlargement|P pulmonale",
      "P-dextrocardiale|P dextroatriale|P pulmonale|rechtsatriale Belastung|Rechtsvorhofvergrößerung",
      name="right atrial overload/enlargement",
      note="The challenge's PTB-XL conversion wrote 446358003 'right atrial hypertrophy' for this statement; "
           "that SNOMED concept is the child RAH here, like LAH under LAO/LAE."),
    E("EL", "systemic", "STTC", "electrolyte disturbance|electrolyte abnormality|drug effect|hypokalaemia|hyperkalaemia",
      "Elektrolytstörung|Hypokaliämie|Hyperkaliämie|Medikamenteneffekt|Medikamentenwirkung",
      name="electrolyte disturbance or drug effect",
      note="PTB-XL 'electrolytic disturbance or drug (former EDIS)'."),
    E("WPW", "conduction", "VPEX", "Wolff-Parkinson-White syndrome|Wolff-Parkinson-White pattern|WPW syndrome|WPW pattern",
      "WPW-Syndrom|Wolff-Parkinson-White-Syndrom|WPW", "74390002", name="Wolff-Parkinson-White syndrome"),
    E("ILBBB", "conduction", "BBB", "incomplete left bundle branch block|ILBBB",
      "inkompletter Linksschenkelblock|unvollständiger Linksschenkelblock", "251120003"),
    E("IPLMI", "ischaemia", "IMI", "inferoposterolateral myocardial infarction|inferoposterolateral infarction",
      "inferoposterolateraler Infarkt"),
    E("ISCAN", "ischaemia", "ISCA", "anterior ischaemia|ischaemia in anterior leads|anterior ischemia",
      "anteriore Ischämie|Ischämie anterior", "426434006", name="ischaemia in anterior leads"),
    E("IPMI", "ischaemia", "IMI", "inferoposterior myocardial infarction|inferoposterior infarction",
      "inferoposteriorer Infarkt"),
    E("SEHYP", "hypertrophy", "VH", "septal hypertrophy|interventricular septal hypertrophy",
      "Septumhypertrophie", note="The challenge's PTB-XL conversion counted this under 266249003 'ventricular hypertrophy' (VH, its parent here)."),
    E("INJIN", "ischaemia", "IMI", "subendocardial injury in inferior leads|inferior subendocardial injury",
      "inferiorer Innenschichtschaden"),
    E("INJLA", "ischaemia", "AMI", "subendocardial injury in lateral leads|lateral subendocardial injury",
      "lateraler Innenschichtschaden"),
    E("PMI", "ischaemia", "MI", "posterior myocardial infarction|posterior infarction|true posterior infarction|posterior wall infarction",
      "posteriorer Infarkt|strikt posteriorer Infarkt"),
    E("3AVB", "conduction", "_AVB", "third degree AV block|complete heart block|complete AV block|AV block III|CHB",
      "AV-Block III|totaler AV-Block|kompletter AV-Block|AV-Block III. Grades", "27885002"),
    E("INJIL", "ischaemia", "IMI", "subendocardial injury in inferolateral leads|inferolateral subendocardial injury",
      "inferolateraler Innenschichtschaden"),
    E("2AVB", "conduction", "_AVB", "second degree AV block|AV block II|2nd degree AV block",
      "AV-Block II|AV-Block II. Grades|AV-Block 2. Grades", "195042002"),
    # form statements
    E("ABQRS", "morphology", "", "abnormal QRS|QRS abnormal|abnormal QRS complex",
      "QRS(T) abnorm|QRS abnorm|QRS(T) abnormal|abnormer QRS-Komplex", "164951009"),
    E("PVC", "rhythm", "PRC(S)|VEB",
      "ventricular premature complex|premature ventricular contraction|ventricular premature beat|ventricular extrasystole|PVC|VPB|VES",
      "ventrikuläre Extrasystole|ventrikuläre Extrasystolen|ventrikuläre Extrasystole(n)|VES|Kammerextrasystole",
      "427172004|17338001",
      note="SNOMED 427172004 (PVC) and 17338001 (ventricular premature beats) are one diagnosis in the "
           "challenge's weights.csv; the broader 164884008 'ventricular ectopics' is its parent VEB."),
    E("STD_", "repolarisation", "STIAB", "ST depression|ST segment depression|non-specific ST depression|depressed ST segments",
      "ST-Senkung|ST-Streckensenkung|ST-Strecken-Senkung", "429622005"),
    E("VCLVH", "hypertrophy", "HVOLT",
      "voltage criteria for left ventricular hypertrophy|left ventricular high voltage|LVH by voltage criteria|LVH voltage criteria",
      "Amplitudenkriterien für Linkshypertrophie|mäßige Amplitudenkriterien für Linkshypertrophie|positiver Sokolow-Index|Sokolow positiv",
      "55827005", name="voltage criteria (QRS) for left ventricular hypertrophy",
      note="SNOMED 55827005 'left ventricular high voltage' states the same finding (voltage criteria met)."),
    E("QWAVE", "morphology", "", "Q waves present|abnormal Q waves|pathological Q waves|Q wave abnormality|QS complexes",
      "Q-Zacken|pathologische Q-Zacken|pathologisches Q|Q-Zacke", "164917005", name="Q waves present"),
    E("LOWT", "repolarisation", "TAB_", "low amplitude T waves|low T waves|small T waves",
      "niedrige T-Wellen|flache T-Wellen|T-Abflachung", name="low amplitude T-waves"),
    E("NT_", "repolarisation", "TAB_", "non-specific T wave changes|nonspecific T wave abnormality|T wave changes",
      "unspezifische T-Veränderungen|T-Veränderungen|unspezifisches abnormes T|unspezifisches T", name="non-specific T-wave changes"),
    E("PAC", "rhythm", "PRC(S)",
      "atrial premature complex|premature atrial contraction|atrial premature beat|supraventricular premature beat|atrial extrasystole|supraventricular extrasystole|PAC|APC|SVPB|SVES",
      "supraventrikuläre Extrasystole|supraventrikuläre Extrasystolen|supraventrikuläre Extrasystole(n)|Vorhofextrasystole|atriale Extrasystole|SVES",
      "284470004|63593006",
      note="SNOMED 284470004 (PAC) and 63593006 (supraventricular premature beats) are one diagnosis in the "
           "challenge's weights.csv; junctional premature complexes are JPC."),
    E("LPR", "measurement", "", "prolonged PR interval|long PR interval|PR prolongation",
      "PQ-Verlängerung|verlängerte PQ-Zeit|PR-Verlängerung|verlängertes PQ", "164947007", name="prolonged PR interval"),
    E("INVT", "repolarisation", "TAB_", "inverted T waves|T wave inversion|negative T waves",
      "T-Negativierung|negative T-Wellen|negatives T|T-Inversion", "59931005", name="inverted T-waves"),
    E("LVOLT", "measurement", "", "low QRS voltages|low voltage|low QRS voltage|low limb lead voltage|low voltage QRS",
      "Niederspannung|periphere Niederspannung|Niedervoltage|Low Voltage|periphere Low Voltage", "251146004",
      name="low QRS voltages in the frontal and horizontal leads",
      note="SNOMED 251146004 'low QRS voltages' (the challenge's PTB-XL conversion used it for LVOLT)."),
    E("HVOLT", "measurement", "", "high QRS voltage|high voltage|increased QRS voltage",
      "hohe QRS-Amplituden|hohe Amplituden|Hochvoltage", name="high QRS voltage"),
    E("TAB_", "repolarisation", "", "T wave abnormality|abnormal T waves|T wave abnormal",
      "T-Wellen-Veränderung|abnormes T|T abnorm|T-Welle abnorm", "164934002", name="T-wave abnormality"),
    E("STE_", "repolarisation", "STIAB", "ST elevation|ST segment elevation|non-specific ST elevation|elevated ST segments",
      "ST-Hebung|ST-Streckenhebung|ST-Strecken-Hebung", "164931005"),
    E("PRC(S)", "rhythm", "", "premature complexes|premature beats|extrasystoles|ectopic beats|premature complex",
      "Extrasystolen|Extrasystole|Extrasystole(n)|Extrasystolie", name="premature complex(es)"),
    # rhythm statements
    E("SR", "rhythm", "", "sinus rhythm|normal sinus rhythm|NSR|regular sinus rhythm",
      "Sinusrhythmus|normofrequenter Sinusrhythmus|regelmäßiger Sinusrhythmus", "426783006",
      note="SNOMED 426783006 'sinus rhythm' (normal sinus rhythm). Not the same as NORM (normal ECG)."),
    E("AFIB", "rhythm", "", "atrial fibrillation|AF|AFib|A-fib|absolute arrhythmia",
      "Vorhofflimmern|absolute Arrhythmie|absolute Arrhythmie bei Vorhofflimmern|VHF", "164889003"),
    E("STACH", "rhythm", "", "sinus tachycardia", "Sinustachykardie", "427084000"),
    E("SARRH", "rhythm", "", "sinus arrhythmia|respiratory sinus arrhythmia",
      "Sinusarrhythmie|respiratorische Sinusarrhythmie", "427393009"),
    E("SBRAD", "rhythm", "BRADY", "sinus bradycardia", "Sinusbradykardie", "426177001"),
    E("PACE", "pacing", "", "normal functioning artificial pacemaker|pacemaker rhythm|paced rhythm|pacing rhythm|pacemaker ECG",
      "Schrittmacher-EKG|Schrittmacher EKG|Schrittmacherrhythmus|stimulierter Rhythmus|Schrittmacherstimulation",
      "10370003", note="SNOMED 10370003 'pacing rhythm' (the challenge's PTB-XL conversion used it for PACE)."),
    E("SVARR", "rhythm", "", "supraventricular arrhythmia|supraventricular ectopy",
      "supraventrikuläre Arrhythmie|supraventrikuläre Rhythmusstörung",
      note="The challenge's PTB-XL conversion counted this under 63593006 'supraventricular premature beats', "
           "which the challenge scores as PAC; the statement is broader, so it keeps no SNOMED code."),
    E("BIGU", "rhythm", "", "bigeminy|bigeminal pattern|bigeminal rhythm", "Bigeminus|Bigeminie",
      name="bigeminal pattern (unknown origin, SV or ventricular)"),
    E("AFLT", "rhythm", "", "atrial flutter|AFL", "Vorhofflattern", "164890007"),
    E("SVTAC", "rhythm", "", "supraventricular tachycardia|SVT|supraventricular tachyarrhythmia",
      "supraventrikuläre Tachykardie|SVT", "426761007"),
    E("PSVT", "rhythm", "SVTAC", "paroxysmal supraventricular tachycardia|PSVT",
      "paroxysmale supraventrikuläre Tachykardie", "67198005"),
    E("TRIGU", "rhythm", "", "trigeminy|trigeminal pattern|trigeminal rhythm", "Trigeminus|Trigeminie",
      name="trigeminal pattern (unknown origin, SV or ventricular)"),
]

# -- SNOMED CT conditions of the challenge that are no PTB-XL statement -------------------------
# The id is the challenge's abbreviation in upper case; AMI and CD are taken by PTB-XL (anterior
# MI, conduction disturbance), so acute MI is ACUTE_MI and cardiac dysrhythmia DYSRHYTHMIA.
SNOMED_ONLY = [
    # scored
    E("BBB", "conduction", "CD", "bundle branch block|BBB", "Schenkelblock", "6374002", "bundle branch block",
      note="Parent of the complete and incomplete left and right bundle branch blocks."),
    E("BRADY", "rhythm", "", "bradycardia|slow heart rate", "Bradykardie|bradykarder Rhythmus", "426627000", "bradycardia"),
    E("LAD", "axis", "", "left axis deviation|LAD|abnormal left axis", "überdrehter Linkstyp|Linksabweichung der Herzachse",
      "39732003", "left axis deviation",
      note="Frontal QRS axis below -30 degrees (German 'überdrehter Linkstyp'; 'Linkstyp' is the normal-range HAXIS)."),
    E("PRWP", "morphology", "", "poor R wave progression|delayed R wave progression|reduced R wave progression|PRWP",
      "fehlende R-Progression|verzögerte R-Progression|R-Verlust|schlechte R-Progression", "365413008",
      "poor R wave progression"),
    E("RAD", "axis", "", "right axis deviation|RAD|rightward axis", "Rechtstyp|überdrehter Rechtstyp|Rechtsabweichung der Herzachse",
      "47665007", "right axis deviation", note="Frontal QRS axis beyond +90 degrees."),
    E("NSSTTA", "repolarisation", "STTC",
      "nonspecific ST-T abnormality|non-specific ST-T wave abnormality|non-specific repolarisation abnormality|nonspecific repolarization abnormalities",
      "unspezifische Erregungsrückbildungsstörung|unspezifische Repolarisationsstörung|unspezifische ST-T-Veränderung",
      "428750005", "nonspecific ST-T abnormality",
      note="The challenge's PTB-XL conversion counted DIG, EL and ANEUR here; they stay separate statements."),
    # unscored
    E("AAR", "rhythm", "ARH", "accelerated atrial escape rhythm|accelerated atrial rhythm",
      "akzelerierter Vorhofrhythmus|beschleunigter Vorhofersatzrhythmus", "233892002", "accelerated atrial escape rhythm"),
    E("AED", "rhythm", "", "atrial escape beat|atrial escape complex", "atrialer Ersatzschlag|Vorhofersatzschlag",
      "251187003", "atrial escape beat"),
    E("AIVR", "rhythm", "IR", "accelerated idioventricular rhythm|AIVR", "akzelerierter idioventrikulärer Rhythmus",
      "61277005", "accelerated idioventricular rhythm"),
    E("AJR", "rhythm", "AVJR", "accelerated junctional rhythm", "akzelerierter junktionaler Rhythmus|beschleunigter AV-Rhythmus",
      "426664006", "accelerated junctional rhythm"),
    E("ALR", "measurement", "", "suspected arm lead reversal|arm lead reversal|limb lead reversal|lead reversal|electrode misplacement",
      "Elektrodenvertauschung|vertauschte Extremitätenableitungen|Vertauschung der Armelektroden", "251139008",
      "suspected arm lead reversal", note="A recording fault, filed under measurement (technical statements)."),
    E("ACUTE_MI", "ischaemia", "MI", "acute myocardial infarction|acute MI|acute infarction|fresh infarction",
      "akuter Myokardinfarkt|akuter Infarkt|frischer Infarkt", "57054005", "acute myocardial infarction",
      note="Challenge abbreviation AMI, renamed because AMI is PTB-XL's anterior MI."),
    E("AMIS", "ischaemia", "ISC_", "acute myocardial ischaemia|acute ischaemia", "akute Myokardischämie|akute Ischämie",
      "413444003", "acute myocardial ischaemia"),
    E("AB", "rhythm", "SVB", "atrial bigeminy|atrial bigeminal rhythm", "atrialer Bigeminus|supraventrikulärer Bigeminus bei Vorhofextrasystolen",
      "251173003", "atrial bigeminy"),
    E("AFAFL", "rhythm", "", "atrial fibrillation and flutter|atrial fibrillation/flutter|atrial flutter-fibrillation",
      "Vorhofflimmern/-flattern|Vorhofflimmern/Flattern|Vorhofflimmern und -flattern", "195080001",
      "atrial fibrillation and flutter"),
    E("AH", "hypertrophy", "HYP", "atrial hypertrophy|atrial enlargement|atrial overload",
      "Vorhofhypertrophie|Vorhofbelastung|Vorhofüberbelastung", "195126007", "atrial hypertrophy",
      note="Parent of the left and right atrial statements."),
    E("AP", "pacing", "PACE", "atrial pacing|atrial paced rhythm|atrial pacing pattern", "Vorhofstimulation|atriale Stimulation|AAI-Stimulation",
      "251268003", "atrial pacing pattern"),
    E("ARH", "rhythm", "", "atrial rhythm|ectopic atrial rhythm|low atrial rhythm",
      "Vorhofrhythmus|ektoper Vorhofrhythmus|tiefer Vorhofrhythmus|Vorhofersatzrhythmus", "106068003", "atrial rhythm",
      note="An ectopic (non-sinus) atrial rhythm."),
    E("ATACH", "rhythm", "SVTAC", "atrial tachycardia|ectopic atrial tachycardia", "atriale Tachykardie|Vorhoftachykardie",
      "713422000", "atrial tachycardia"),
    E("AVD", "conduction", "CD", "atrioventricular dissociation|AV dissociation", "AV-Dissoziation|atrioventrikuläre Dissoziation",
      "50799005", "atrioventricular dissociation"),
    E("AVJR", "rhythm", "", "junctional rhythm|AV junctional rhythm|nodal rhythm|AV nodal rhythm",
      "AV-Knotenrhythmus|junktionaler Rhythmus|AV-Rhythmus|Knotenrhythmus|Knotenersatzrhythmus", "29320008",
      "atrioventricular junctional rhythm"),
    E("AVNRT", "rhythm", "SVTAC", "AV nodal re-entrant tachycardia|atrioventricular nodal reentrant tachycardia|AVNRT",
      "AV-Knoten-Reentrytachykardie|AVNRT", "251166008", "atrioventricular nodal re-entrant tachycardia"),
    E("AVRT", "rhythm", "SVTAC", "atrioventricular re-entrant tachycardia|AV reentrant tachycardia|AVRT",
      "AV-Reentrytachykardie|atrioventrikuläre Reentrytachykardie", "233897008", "atrioventricular re-entrant tachycardia"),
    E("BPAC", "rhythm", "PAC", "blocked premature atrial contraction|non-conducted PAC|blocked atrial premature beat|non-conducted P wave",
      "blockierte supraventrikuläre Extrasystole|blockierte Vorhofextrasystole", "251170000",
      "blocked premature atrial contraction"),
    E("BRU", "repolarisation", "", "Brugada pattern|Brugada syndrome|Brugada", "Brugada-Syndrom|Brugada-Muster",
      "418818005", "Brugada syndrome"),
    E("BTS", "rhythm", "SND", "brady-tachy syndrome|tachycardia-bradycardia syndrome|tachy-brady syndrome",
      "Bradykardie-Tachykardie-Syndrom|Tachy-Brady-Syndrom", "74615001", "bradycardia-tachycardia syndrome"),
    E("CAF", "rhythm", "AFIB", "chronic atrial fibrillation|permanent atrial fibrillation", "chronisches Vorhofflimmern|permanentes Vorhofflimmern",
      "426749004", "chronic atrial fibrillation"),
    E("CCR", "axis", "", "counterclockwise rotation|counter-clockwise rotation|early precordial transition",
      "Drehung gegen den Uhrzeigersinn|frühe R/S-Umschlagzone", "251199005", "counterclockwise rotation",
      note="Rotation about the long axis, seen as an early precordial R/S transition."),
    E("CVCL", "axis", "", "clockwise or counterclockwise vectorcardiographic loop|vectorcardiographic loop rotation",
      "Vektorschleife im oder gegen den Uhrzeigersinn", "61721007",
      "clockwise or counterclockwise vectorcardiographic loop", note="Challenge abbreviation CVCL/CCVCL."),
    E("DYSRHYTHMIA", "rhythm", "", "cardiac dysrhythmia|cardiac arrhythmia|arrhythmia|dysrhythmia",
      "Herzrhythmusstörung|Rhythmusstörung|Arrhythmie", "698247007", "cardiac dysrhythmia",
      note="Challenge abbreviation CD, renamed because CD is PTB-XL's conduction disturbance."),
    E("CIAHB", "conduction", "_AVB", "congenital incomplete atrioventricular heart block|congenital AV block",
      "angeborener inkompletter AV-Block", "204384007", "congenital incomplete atrioventricular heart block"),
    E("CHD", "ischaemia", "", "coronary heart disease|coronary artery disease|ischaemic heart disease|CHD|CAD",
      "koronare Herzkrankheit|KHK|ischämische Herzkrankheit", "53741008", "coronary heart disease",
      note="A disease rather than an ECG finding; kept because the challenge labels it."),
    E("CMI", "ischaemia", "ISC_", "chronic myocardial ischaemia|chronic ischaemia", "chronische Myokardischämie|chronische Ischämie",
      "413844008", "chronic myocardial ischaemia"),
    E("CR", "axis", "", "clockwise rotation|late precordial transition", "Drehung im Uhrzeigersinn|späte R/S-Umschlagzone",
      "251198002", "clockwise rotation"),
    E("DIB", "conduction", "IVCD", "diffuse intraventricular block|diffuse intraventricular conduction delay",
      "diffuser intraventrikulärer Block", "82226007", "diffuse intraventricular block"),
    E("ERE", "repolarisation", "", "early repolarisation|early repolarization|early repolarization pattern|early repolarization syndrome",
      "frühe Repolarisation|vorzeitige Repolarisation|Frührepolarisation", "428417006", "early repolarisation"),
    E("FB", "rhythm", "", "fusion beats|fusion complexes|fusion beat", "Fusionsschläge|Kombinationssystolen", "13640000",
      "fusion beats"),
    E("FQRS", "morphology", "", "fragmented QRS|fQRS|QRS fragmentation", "fragmentierter QRS-Komplex|QRS-Fragmentierung",
      "164942001", "fragmented QRS"),
    E("HF", "systemic", "", "heart failure|cardiac failure|congestive heart failure", "Herzinsuffizienz|Herzschwäche",
      "84114007", "heart failure"),
    E("HVD", "systemic", "", "heart valve disorder|valvular heart disease", "Herzklappenerkrankung|Vitium|Herzklappenfehler",
      "368009", "heart valve disorder"),
    E("HTV", "repolarisation", "TAB_", "high T wave voltage|tall T waves|peaked T waves|high T voltage",
      "hohe T-Wellen|überhöhtes T|zeltförmiges T|hohes T", "251259000", "high T-wave voltage"),
    E("ICA", "axis", "", "indeterminate axis|indeterminate cardiac axis|indeterminate QRS axis|axis not determinable",
      "Lagetyp nicht bestimmbar|QRS-Achse nicht bestimmbar|Sagittaltyp|unbestimmbarer Lagetyp", "251200008",
      "indeterminate cardiac axis"),
    E("IIAVBII", "conduction", "2AVB", "Mobitz type II|second degree AV block Mobitz II|Mobitz II",
      "AV-Block II Typ Mobitz|AV-Block II. Grades Typ Mobitz|Mobitz II", "426183003",
      "second degree AV block, Mobitz type II"),
    E("ISTD", "repolarisation", "STD_", "inferior ST depression|inferior ST segment depression",
      "inferiore ST-Senkung|ST-Senkung inferior", "704997005", "inferior ST segment depression"),
    E("IR", "rhythm", "", "idioventricular rhythm|IVR", "idioventrikulärer Rhythmus|Kammerersatzrhythmus", "49260003",
      "idioventricular rhythm"),
    E("JE", "rhythm", "", "junctional escape|junctional escape beat|nodal escape beat",
      "AV-Knoten-Ersatzschlag|junktionaler Ersatzschlag|Knotenersatzschlag", "426995002", "junctional escape beat"),
    E("JPC", "rhythm", "PRC(S)", "junctional premature complex|junctional premature beat|junctional extrasystole|nodal premature beat",
      "AV-Knoten-Extrasystole|junktionale Extrasystole|Knotenextrasystole", "251164006", "junctional premature complex"),
    E("JTACH", "rhythm", "SVTAC", "junctional tachycardia|junctional ectopic tachycardia", "junktionale Tachykardie|AV-Knoten-Tachykardie",
      "426648003", "junctional tachycardia"),
    E("LAA", "hypertrophy", "LAO/LAE", "left atrial abnormality", "linksatriale Anomalie|linksatriale Auffälligkeit",
      "253352002", "left atrial abnormality"),
    E("LAH", "hypertrophy", "LAO/LAE", "left atrial hypertrophy", "linksatriale Hypertrophie|Linksvorhofhypertrophie",
      "446813000", "left atrial hypertrophy"),
    E("LVS", "hypertrophy", "", "left ventricular strain|left ventricular overload|LV strain|strain pattern",
      "Linksbelastung|Linksherzbelastung|linksventrikuläre Belastung|linksventrikuläre Schädigungszeichen",
      "370365005", "left ventricular strain",
      note="Repolarisation changes of left ventricular pressure overload; filed with hypertrophy as LUDB does."),
    E("MOI", "conduction", "2AVB", "Mobitz type I|Wenckebach|Wenckebach block|second degree AV block Mobitz I",
      "Wenckebach|AV-Block II Typ Wenckebach|Wenckebach-Periodik|Mobitz I", "54016002",
      "second degree AV block, Mobitz type I (Wenckebach)", note="Challenge abbreviation MoI."),
    E("OLDMI", "ischaemia", "MI", "old myocardial infarction|old infarction|prior infarction|previous myocardial infarction|myocardial scar",
      "alter Infarkt|alter Myokardinfarkt|Infarktnarbe|Narbe|abgelaufener Infarkt", "164867002", "old myocardial infarction"),
    E("PAF", "rhythm", "AFIB", "paroxysmal atrial fibrillation|PAF", "paroxysmales Vorhofflimmern|intermittierendes Vorhofflimmern",
      "282825002", "paroxysmal atrial fibrillation"),
    E("PPW", "measurement", "", "prolonged P wave|wide P wave|P wave prolongation|broad P wave",
      "P-Verbreiterung|verbreitertes P|breite P-Welle", "251205003", "prolonged P wave"),
    E("PVT", "rhythm", "VTACH", "paroxysmal ventricular tachycardia|non-sustained ventricular tachycardia|nsVT",
      "paroxysmale ventrikuläre Tachykardie|nicht anhaltende Kammertachykardie", "425856008",
      "paroxysmal ventricular tachycardia"),
    E("PWC", "morphology", "", "P wave change|P wave abnormality|abnormal P wave", "P-Wellen-Veränderung|abnorme P-Welle|P abnorm",
      "164912004", "P wave change"),
    E("RAAB", "hypertrophy", "RAO/RAE", "right atrial abnormality", "rechtsatriale Anomalie|rechtsatriale Auffälligkeit",
      "253339007", "right atrial abnormality"),
    E("RAB", "morphology", "", "R wave abnormality|abnormal R wave|R wave abnormal", "R-Zacken-Veränderung|abnorme R-Zacke",
      "164921003", "R wave abnormality"),
    E("RAH", "hypertrophy", "RAO/RAE", "right atrial hypertrophy", "rechtsatriale Hypertrophie|Rechtsvorhofhypertrophie",
      "446358003", "right atrial hypertrophy"),
    E("RAHV", "hypertrophy", "RAO/RAE", "right atrial high voltage|tall right atrial P waves", "hohe rechtsatriale P-Amplitude",
      "67751000119106", "right atrial high voltage"),
    E("RAF", "rhythm", "AFIB", "rapid atrial fibrillation|atrial fibrillation with rapid ventricular response|fast atrial fibrillation",
      "tachykardes Vorhofflimmern|Tachyarrhythmia absoluta|Tachyarrhythmie bei Vorhofflimmern", "314208002",
      "rapid atrial fibrillation"),
    E("SAAWR", "rhythm", "WAP", "sinus to atrial wandering rhythm|wandering pacemaker from sinus to atrium",
      "wandernder Schrittmacher zwischen Sinusknoten und Vorhof", "17366009", "sinus atrium to atrial wandering rhythm"),
    E("SAB", "conduction", "CD", "sinoatrial block|SA block|sinoatrial exit block|sinoatrial blockade",
      "sinuatrialer Block|SA-Block|sinuaurikulärer Block", "65778007", "sinoatrial block"),
    E("SARR", "rhythm", "SND", "sinus arrest|sinus pause|sinus standstill", "Sinusarrest|Sinusstillstand|Sinuspause",
      "5609005", "sinus arrest"),
    E("SND", "rhythm", "", "sinus node dysfunction|sick sinus syndrome", "Sinusknotendysfunktion|Sinusknotensyndrom|Sick-Sinus-Syndrom",
      "60423000", "sinus node dysfunction"),
    E("SPRI", "measurement", "", "short PR interval|shortened PR interval", "verkürzte PQ-Zeit|kurzes PQ|PQ-Verkürzung",
      "49578007", "shortened PR interval"),
    E("SQT", "measurement", "", "short QT interval|decreased QT interval|shortened QT", "verkürzte QT-Zeit|kurzes QT|QT-Verkürzung",
      "77867006", "short QT interval"),
    E("STIAB", "repolarisation", "", "ST segment abnormality|ST interval abnormal|abnormal ST segment",
      "ST-Streckenveränderung|ST-Strecke abnorm|ST-Veränderung", "164930006", "ST segment abnormality",
      note="Parent of ST depression and ST elevation."),
    E("SVB", "rhythm", "BIGU|PAC", "supraventricular bigeminy", "supraventrikulärer Bigeminus", "251168009",
      "supraventricular bigeminy"),
    E("TIA", "systemic", "", "transient ischaemic attack|TIA", "transitorische ischämische Attacke|TIA", "266257000",
      "transient ischaemic attack", note="Non-cardiac (cerebrovascular); kept because the challenge labels it."),
    E("TPW", "morphology", "PWC", "tall P wave|peaked P wave|high P wave", "hohe P-Welle|spitze P-Welle|überhöhtes P",
      "251223006", "tall P wave"),
    E("UAB", "repolarisation", "", "U wave abnormality|prominent U waves|abnormal U wave", "U-Welle|prominente U-Welle|U-Wellen-Veränderung",
      "164937009", "U wave abnormality"),
    E("VBIG", "rhythm", "BIGU|PVC", "ventricular bigeminy|ventricular bigeminal rhythm", "ventrikulärer Bigeminus|Kammerbigeminus",
      "11157007", "ventricular bigeminy"),
    E("VEB", "rhythm", "", "ventricular ectopic beats|ventricular ectopics|ventricular ectopy|ventricular ectopic activity",
      "ventrikuläre Ektopie|ventrikuläre Ektopien|ventrikuläre Heterotopie", "164884008", "ventricular ectopic beats",
      note="Broader than PVC (includes escape beats); the challenge's PTB-XL conversion used it for PVC."),
    E("VESB", "rhythm", "VEB", "ventricular escape beat|ventricular escape complex", "ventrikulärer Ersatzschlag|Kammerersatzschlag",
      "75532003", "ventricular escape beat", note="Challenge abbreviation VEsB."),
    E("VESR", "rhythm", "", "ventricular escape rhythm", "ventrikulärer Ersatzrhythmus|Kammerersatzrhythmus",
      "81898007", "ventricular escape rhythm", note="Challenge abbreviation VEsR."),
    E("VF", "rhythm", "", "ventricular fibrillation|VF|VFib", "Kammerflimmern", "164896001", "ventricular fibrillation"),
    E("VFL", "rhythm", "", "ventricular flutter", "Kammerflattern", "111288001", "ventricular flutter"),
    E("VH", "hypertrophy", "HYP", "ventricular hypertrophy", "Kammerhypertrophie|ventrikuläre Hypertrophie",
      "266249003", "ventricular hypertrophy", note="Parent of LVH, RVH and SEHYP."),
    E("VPEX", "conduction", "CD", "ventricular pre-excitation|pre-excitation|preexcitation|delta wave",
      "Präexzitation|ventrikuläre Präexzitation|Delta-Welle", "195060002", "ventricular pre-excitation",
      note="Parent of WPW."),
    E("VPP", "pacing", "PACE", "ventricular pacing|ventricular paced rhythm|ventricular pacing pattern",
      "Kammerstimulation|ventrikuläre Stimulation|VVI-Stimulation", "251266004", "ventricular pacing pattern"),
    E("VPVC", "rhythm", "PVC", "ventricular couplet|paired ventricular premature complexes|couplets|PVC couplet",
      "ventrikuläres Couplet|Couplets|VES-Paare|gepaarte ventrikuläre Extrasystolen", "251182009",
      "paired ventricular premature complexes"),
    E("VTACH", "rhythm", "", "ventricular tachycardia|VT", "ventrikuläre Tachykardie|Kammertachykardie", "164895002",
      "ventricular tachycardia"),
    E("VTRIG", "rhythm", "TRIGU|PVC", "ventricular trigeminy", "ventrikulärer Trigeminus|Kammertrigeminus", "251180001",
      "ventricular trigeminy"),
    E("WAP", "rhythm", "", "wandering atrial pacemaker|wandering pacemaker", "wandernder Schrittmacher|wandernder Vorhofschrittmacher",
      "195101003", "wandering atrial pacemaker"),
]

# -- conditions the other dataset mappers need (LUDB, MIT-BIH, CinC 2017, CPSC 2021) -------------
OTHER = [
    E("NAXIS", "axis", "", "normal axis|normal electrical axis|normal QRS axis",
      "Lagetyp normal|Normaltyp|Indifferenztyp|Mittellagetyp", name="normal electrical axis",
      note="Frontal QRS axis -30 to +90 degrees (LUDB 'Electric axis of the heart: normal')."),
    E("HAXIS", "axis", "NAXIS", "horizontal axis|horizontal electrical axis|leftward axis",
      "Linkstyp|Horizontaltyp|Linkslagetyp", name="horizontal electrical axis",
      note="Normal-range axis about -30 to +30 degrees (LUDB 'horizontal'; German 'Linkstyp')."),
    E("VAXIS", "axis", "NAXIS", "vertical axis|vertical electrical axis", "Steiltyp|Vertikaltyp",
      name="vertical electrical axis",
      note="Normal-range axis about +60 to +90 degrees (LUDB 'vertical'; German 'Steiltyp')."),
    E("ISR", "rhythm", "SARRH", "irregular sinus rhythm", "unregelmäßiger Sinusrhythmus", name="irregular sinus rhythm",
      note="LUDB lists it apart from sinus arrhythmia."),
    E("TAFL", "rhythm", "AFLT", "typical atrial flutter|cavotricuspid isthmus-dependent flutter",
      "typisches Vorhofflattern", name="typical atrial flutter",
      note="LUDB 'Atrial flutter, typical' (cavotricuspid isthmus-dependent flutter)."),
    E("PERSAF", "rhythm", "AFIB", "persistent atrial fibrillation", "persistierendes Vorhofflimmern",
      name="persistent atrial fibrillation", note="CPSC 2021 record class."),
    E("ABERR", "conduction", "CD", "aberrant conduction|aberrant ventricular conduction|aberrancy",
      "aberrante Leitung|aberrante ventrikuläre Leitung|Aberration", name="aberrant ventricular conduction",
      note="LUDB 'Aberrant conduction'; MIT-BIH aberrated atrial premature beats (symbol a)."),
    E("STEMI", "ischaemia", "ACUTE_MI", "ST elevation myocardial infarction|STEMI|acute ST elevation infarction",
      "ST-Hebungsinfarkt|STEMI|ST-Streckenhebungsinfarkt", name="ST-elevation myocardial infarction",
      note="LUDB 'STEMI: <wall>'; the LUDB mapper adds the wall's infarction id beside it."),
    E("ISC_OR_SCAR", "ischaemia", "CHD", "undefined ischaemia, scar or suspected NSTEMI|ischaemia or scar",
      "Ischämie oder Narbe", name="ischaemia, scar or suspected NSTEMI (undetermined)",
      note="LUDB 'Undefined ischemia/scar/supp.NSTEMI': one of the three, not told apart."),
    E("BIVPACE", "pacing", "VPP", "biventricular pacing|cardiac resynchronisation pacing|CRT pacing",
      "biventrikuläre Stimulation|CRT-Stimulation", name="biventricular pacing",
      note="LUDB 'Biventricular pacing' (cardiac resynchronisation)."),
    E("PSYNC", "pacing", "VPP", "P-synchronous ventricular pacing|atrial-synchronous ventricular pacing|VDD pacing|P-synchrony",
      "vorhofgesteuerte Kammerstimulation|VDD-Stimulation|P-synchrone Stimulation", name="P-synchronous ventricular pacing",
      note="LUDB 'P-synchrony': ventricular pacing triggered by sensed P waves (VDD/DDD modes)."),
    E("ASYS", "rhythm", "", "asystole|cardiac standstill", "Asystolie", name="asystole",
      note="WFDB rhythm note '(ASYS' (MIT-BIH Malignant Ventricular Ectopy Database)."),
    E("OTHER_RHYTHM", "rhythm", "", "other rhythm|abnormal rhythm|non-sinus non-AF rhythm", "anderer Rhythmus",
      name="other rhythm (neither normal sinus rhythm nor atrial fibrillation)",
      note="CinC 2017 class O: any rhythm that is neither normal sinus rhythm nor AF, or too unusual to tell."),
    E("NOISE", "measurement", "", "noisy recording|too noisy to classify|unreadable recording|artefact|artifact",
      "Artefakte|verrauschtes EKG|nicht auswertbar|Störsignal", name="noisy recording (too noisy to classify)",
      note="A signal-quality statement (CinC 2017 class ~, MIT-BIH '(NOISE'); filed under measurement."),
]


def _read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def build() -> list[dict[str, str]]:
    """Rows of the catalogue, checked against the sources."""
    statements = {row[""]: row for row in _read_csv(DATA / "ptb-xl" / "scp_statements.csv")}
    dx = _read_csv(DATA / "challenge2021" / "dx_mapping_scored.csv") + _read_csv(
        DATA / "challenge2021" / "dx_mapping_unscored.csv")
    superclasses = {r["diagnostic_class"] for r in statements.values() if r["diagnostic_class"]}
    subclasses = {r["diagnostic_subclass"] for r in statements.values() if r["diagnostic_subclass"]}
    rows = []
    for e in PTBXL + SNOMED_ONLY + OTHER:
        st = statements.get(e.id)
        groups = []
        if st is not None:
            groups += [g for g in ("diagnostic", "form", "rhythm") if st[g] == "1.0"]
            if st["diagnostic_class"]:
                groups += [f"class={st['diagnostic_class']}", f"subclass={st['diagnostic_subclass']}"]
        if e.id in superclasses:
            groups.append("superclass")
        if e.id in subclasses:
            groups.append("subclass")
        if st is not None:
            desc = f"PTB-XL {'/'.join(g for g in ('diagnostic', 'form', 'rhythm') if g in groups)} statement"
            scp_desc = st["SCP-ECG Statement Description"]
            desc += f" ({st['Statement Category']}: {scp_desc})."
        elif "superclass" in groups or "subclass" in groups:
            desc = ""
        else:
            desc = ""
        if e.snomed:
            names = {r["SNOMEDCTCode"]: r["Dx"] for r in dx}
            desc += " SNOMED CT: " + "; ".join(f"{c} {names.get(c, '?')}" for c in e.snomed.split("|")) + "."
        if e.note:
            desc += " " + e.note
        rows.append({
            "id": e.id,
            "name": e.name or (st["description"] if st else e.id),
            "category": e.category,
            "parent": e.parent,
            "synonyms_en": e.en,
            "synonyms_de": e.de,
            "scp": e.id if st is not None else "",
            "snomed": e.snomed,
            "aha": st["AHA code"] if st is not None else "",
            "ptbxl_groups": "|".join(groups),
            "description": desc.strip(),
        })
    # Checks: every statement, superclass, subclass and SNOMED code lands in exactly one row.
    ids = [r["id"] for r in rows]
    assert len(ids) == len(set(ids)), [i for i in ids if ids.count(i) > 1]
    missing = (set(statements) | superclasses | subclasses) - set(ids)
    assert not missing, missing
    codes = [c for r in rows for c in r["snomed"].split("|") if c]
    assert len(codes) == len(set(codes)), [c for c in codes if codes.count(c) > 1]
    challenge = {r["SNOMEDCTCode"] for r in dx}
    assert not challenge - set(codes), challenge - set(codes)
    where = {c: r["id"] for r in rows for c in r["snomed"].split("|") if c}
    with (DATA / "challenge2021" / "weights.csv").open() as f:
        header = next(csv.reader(f))[1:]
    for pair in (h for h in header if "|" in h):
        assert len({where[c] for c in pair.split("|")}) == 1, pair
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--force", action="store_true", help="overwrite an existing catalogue")
    args = parser.parse_args(argv)
    if args.out.exists() and not args.force:
        print(f"{args.out} exists; it is the source of truth now. Use --force to overwrite.", file=sys.stderr)
        return 1
    rows = build()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="", encoding="utf-8") as f:
        f.write(f"# ecgfm conditions catalogue, version {VERSION}. One condition per row; see README.md here.\n")
        writer = csv.DictWriter(f, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {len(rows)} conditions to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
