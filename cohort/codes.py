"""Default code tables of the cohort tool: covariates, outcomes, histology and the synthetic-data tag.

Each table names its source. A site overrides any of them in the ``[cohort]`` section of its
configuration (see docs/cohort.md); nothing here is used for the score itself, whose codes live in
``fhir_mappings/data``.
"""

from __future__ import annotations

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
UCUM = "http://unitsofmeasure.org"

Code = tuple[str, str]

#: ECOG performance status score (LOINC 89247-1; mCODE ECOGPerformanceStatus uses valueInteger).
ECOG_CODES: tuple[Code, ...] = ((LOINC, "89247-1"),)
#: LOINC answer list LL529-9 for 89247-1 (as used by mCODE and the German tumour-board IGs).
ECOG_ANSWERS: dict[Code, int] = {
    (LOINC, "LA9622-7"): 0,
    (LOINC, "LA9623-5"): 1,
    (LOINC, "LA9624-3"): 2,
    (LOINC, "LA9625-0"): 3,
    (LOINC, "LA9626-8"): 4,
    (LOINC, "LA9627-6"): 5,
}

#: PD-L1 tumour proportion score: LOINC 83053-9 "Cells.programmed cell death ligand 1/100 viable tumor
#: cells in Tissue by Immune stain" (unit %), the TC score of the MII and mCODE biomarker profiles.
PDL1_TPS_CODES: tuple[Code, ...] = ((LOINC, "83053-9"),)

#: Tobacco smoking status (LOINC 72166-2) with the US Core SNOMED CT answers.
SMOKING_CODES: tuple[Code, ...] = ((LOINC, "72166-2"),)
SMOKING_NEVER: frozenset[Code] = frozenset({(SNOMED, "266919005")})  # Never smoked tobacco
SMOKING_EVER: frozenset[Code] = frozenset(
    {
        (SNOMED, "8517006"),  # Ex-smoker
        (SNOMED, "449868002"),  # Smokes tobacco daily
        (SNOMED, "428041000124106"),  # Occasional tobacco smoker
        (SNOMED, "77176002"),  # Smoker
        (SNOMED, "428061000124105"),  # Light tobacco smoker
        (SNOMED, "428071000124103"),  # Heavy tobacco smoker
    }
)

#: Histology of lung cancer from Condition codes (SNOMED CT disorders; names as in the SNOMED CT
#: lung-disorder extracts and DICOM CID 639). The paper compares SqCC with all other NSCLC (Tables 3, 4).
HISTOLOGY: dict[Code, str] = {
    (SNOMED, "254634000"): "squamous",  # Squamous cell carcinoma of lung
    (SNOMED, "723301009"): "squamous",  # Squamous non-small cell lung cancer
    (SNOMED, "423295000"): "squamous",  # Squamous cell carcinoma of lung, TNM stage 1
    (SNOMED, "423468007"): "squamous",  # ... stage 2
    (SNOMED, "425230006"): "squamous",  # ... stage 3
    (SNOMED, "425376008"): "squamous",  # ... stage 4
    (SNOMED, "254626006"): "adenocarcinoma",  # Adenocarcinoma of lung
    (SNOMED, "707451005"): "adenocarcinoma",  # Primary adenocarcinoma of lung
    (SNOMED, "707452003"): "adenocarcinoma",  # Primary mucinous adenocarcinoma of lung
    (SNOMED, "254629004"): "large_cell",  # Large cell carcinoma of lung
    (SNOMED, "254637007"): "nsclc_nos",  # Non-small cell lung cancer
    (SNOMED, "440173001"): "nsclc_nos",  # Nonsquamous nonsmall cell neoplasm of lung
    (SNOMED, "424132000"): "nsclc_nos",  # Non-small cell carcinoma of lung, TNM stage 1
    (SNOMED, "425048006"): "nsclc_nos",  # ... stage 2
    (SNOMED, "422968005"): "nsclc_nos",  # ... stage 3
    (SNOMED, "423121009"): "nsclc_nos",  # ... stage 4
}
#: The paper's two histology groups.
SQUAMOUS_DETAILS = frozenset({"squamous"})
#: Details that name no histology type; a specific one wins over them whatever their dates.
UNSPECIFIED_DETAILS = frozenset({"nsclc_nos"})
HISTOLOGY_GROUPS = ("SqCC", "Non-SqCC")

#: mCODE CancerDiseaseStatus: LOINC 97509-4 "Cancer disease progression" (STU3; 88040-1 "Response to
#: cancer treatment" in STU1/2), value SNOMED CT 271299001 "Patient's condition worsened".
PROGRESSION_OBSERVATION_CODES: tuple[Code, ...] = ((LOINC, "97509-4"), (LOINC, "88040-1"))
PROGRESSION_VALUES: tuple[Code, ...] = ((SNOMED, "271299001"),)

#: Resources of synthetic data carry this tag (HL7 v3 ActReason HTEST "test health data").
SYNTHETIC_TAG: Code = ("http://terminology.hl7.org/CodeSystem/v3-ActReason", "HTEST")

#: Administrations and orders that never happened: MedicationAdministration.status not-done and
#: entered-in-error; MedicationRequest.status cancelled, entered-in-error and draft (never signed).
#: https://hl7.org/fhir/R4/valueset-medication-admin-status.html, valueset-medicationrequest-status.html
VOID_DOSE_STATUSES: tuple[str, ...] = ("entered-in-error", "not-done", "cancelled", "draft")
#: Observation statuses that are not results (https://hl7.org/fhir/R4/valueset-observation-status.html).
VOID_RESULT_STATUSES: tuple[str, ...] = ("entered-in-error", "cancelled", "registered")
#: MedicationRequest.intent values that are not orders (a proposal, a plan, an option of a set).
#: https://hl7.org/fhir/R4/valueset-medicationrequest-intent.html
NOT_ORDER_INTENTS: tuple[str, ...] = ("proposal", "plan", "option")
