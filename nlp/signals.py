"""Deal phrases: intent, won, lost and stage advances, in English, German and Spanish.

A phrase hit in what a person wrote (quotes stripped) is a signal, and the sentence that holds it is
the evidence. Patterns are word-bounded and case-insensitive; each list covers the ways people
actually say it (not one canonical sentence), and guards keep the commonest false friends out:
"not moving forward *with the other vendor*" is good news, "budget approved" is not a cut.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from nlp import clean, money, probes, support
from nlp.clean import sentences
from nlp.probes import UNUSUAL_CASE, Probes


def _words(*patterns: str) -> re.Pattern[str]:
    return re.compile(r"(?<!\w)(?:" + "|".join(patterns) + r")(?!\w)", re.IGNORECASE)


_OTHER = r"(?:another|a\s+different|an?\s+(?:alternative|competing|other)|the\s+other|a\s+competitor'?s?|(?:a\s+|the\s+)?competitor)"
_VENDOR = r"(?:vendors?|suppliers?|providers?|solutions?|partners?|offers?|products?|options?|platforms?|compan(?:y|ies))"

INTENT = _words(
    r"pric(?:e|es|ing)",
    r"quot(?:e|es|ation)",
    r"proposal",
    r"(?:free\s+)?trial",
    r"pilot",
    r"rfp",
    r"rfq",
    r"rfi",
    r"request\s+for\s+(?:proposal|quotation|information)",
    r"purchase\s+order",
    r"contract",
    r"demo(?:nstration)?",
    r"licen[cs]es?",
    r"how\s+much",
    r"cost(?:s|ing)?",
    r"budget",
    r"tender",
    r"order(?:ing)?\s+\d+",
    r"angebot\w*",
    r"preis(?:e|liste|angabe)?",
    r"kosten\w*",
    r"kostenvoranschlag",
    r"bestell\w*",
    r"vertrag\w*",
    r"testphase",
    r"teststellung",
    r"vorführung",
    r"ausschreibung",
    r"lizenz(?:en)?",
    r"anfrage",
    r"presupuesto",
    r"cotizaci[oó]n",
    r"precios?",
    r"propuesta",
    r"prueba",
    r"piloto",
    r"contrato",
    r"orden\s+de\s+compra",
    r"licencias?",
    r"licitaci[oó]n",
    r"demostraci[oó]n",
    r"oferta",
)
# A buyer asking: the strongest sign that a thread is a deal for us.
REQUEST = _words(
    r"(?:send|share|give)\s+(?:us|me)\s+(?:a|an|your|some)?\s*(?:\w+\s+)?(?:quote|quotation|proposal|pricing|price|offer|estimate)",
    r"(?:interested\s+in|looking\s+(?:for|at)|evaluating|considering)\s+(?:your|a|an|the)?",
    r"how\s+much\s+(?:would|does|is|will)",
    r"what\s+(?:would|does)\s+(?:it|that|this)\s+cost",
    r"request\s+for\s+(?:proposal|quotation)",
    r"(?:rfp|rfq)\b",
    r"(?:book|schedule|arrange)\s+a\s+demo",
    r"(?:bitte\s+)?(?:um\s+)?(?:ein|ihr)\s+angebot",
    r"angebot\s+(?:für|über|zu)",
    r"was\s+(?:kostet|würde)",
    r"interesse\s+an",
    r"(?:preise|konditionen)\s+(?:für|zu)",
    r"ausschreibung",
    r"(?:enviar(?:nos|me)?|env[ií]en(?:nos|me)?|mandar(?:nos|me)?)\s+(?:una|un|su)?\s*(?:cotizaci[oó]n|presupuesto|propuesta|oferta)",
    r"(?:cu[aá]nto\s+(?:cuesta|costar[ií]a))",
    r"interesad[oa]s?\s+en",
    r"solicit\w*\s+(?:de\s+)?(?:cotizaci[oó]n|presupuesto|oferta)",
)
# Job talk: a recruiter's "exclusive opportunity" is a position offered to the reader, not a deal.
JOB = _words(
    r"recruit(?:er|ing)\s+(?:for|on\s+behalf\s+of)\s+(?:a|an|my|our)\s+client",
    r"(?:exclusive|confidential)\s+(?:search|opportunity|mandate|role|position)\s+(?:for|with)\s+(?:a|an)\b",
    r"head-?hunt\w*",
    r"executive\s+search",
    r"(?:your|ihr|votre|su)\s+(?:profile|profil|perfil|cv|lebenslauf)\b",
    r"(?:open\s+to|interested\s+in)\s+(?:a\s+)?(?:new\s+)?(?:role|position|career\s+move)",
    r"personalberat\w*",
    r"(?:cabinet|agence)\s+de\s+recrutement",
    r"recrut\w*\s+(?:de\s+)?(?:un|une|le|la|son|sa|leur|notre)\s+(?:futur\w*\s+)?(?:directeur|directrice|responsable|head)",
    r"(?:profil\s+recherch[ée]|gesuchte\w*\s+profil|perfil\s+buscado|profile\s+(?:we|they)\s+are\s+looking\s+for)",
    r"(?:poste|rôle)\s+de\s+(?:directeur|directrice|responsable)\s+commercial\w*",
    r"(?:puesto|vacante)\s+de\s+(?:director|directora|responsable|jefe|gerente)\w*",
    r"selecci[oó]n\s+de\s+(?:personal|directivos)",
)
# Someone offering what they sell: from a customer's side of the table this means we are the buyer.
SELLING = _words(
    r"our\s+(?:quote|quotation|proposal|offer|pricing|price\s+list)",
    r"we\s+(?:are\s+pleased|would\s+be\s+happy)\s+to\s+offer",
    r"unser\s+angebot",
    r"(?:wir\s+)?(?:bieten|unterbreiten)\s+(?:ihnen|euch)",
    r"nuestra\s+(?:propuesta|cotizaci[oó]n|oferta)",
    r"le\s+(?:ofrecemos|enviamos\s+nuestra)",
)
WON = _words(
    r"(?:signed|countersigned|executed|approved)\s+(?:the\s+|our\s+|your\s+)?(?:contract|agreement|order\s+form|quote|sow|msa)",
    r"(?:contract|agreement|order\s+form|sow|msa)\s+(?:is\s+|was\s+|has\s+been\s+)?(?:signed|countersigned|executed|fully\s+executed)",
    r"(?:po|purchase\s+order)(?:\s+(?:no\.?|number|#)\s*[\w-]+)?\s+(?:is\s+)?(?:attached|enclosed|issued|follows|on\s+its\s+way)",
    r"(?:attached|enclosed)\s+(?:is|please\s+find)?\s*(?:our|the)\s+(?:po|purchase\s+order|signed\s+\w+)",
    r"(?:please\s+)?(?:send|issue)\s+(?:us\s+)?(?:the|your|an)\s+invoice",
    r"(?:ready|go\s+ahead)\s+to\s+(?:order|purchase|proceed)",
    r"we(?:'d|\s+would)\s+like\s+to\s+(?:proceed|move\s+ahead|go\s+ahead|place\s+(?:the|an|our)\s+order)",
    r"(?:we\s+are|we're)\s+(?:moving|going)\s+ahead\s+with\s+(?:you|your|the\s+(?:order|purchase|proposal))",
    r"(?:legal|procurement|finance)\s+(?:has\s+)?signed\s+off",
    r"you(?:'ve|\s+have)\s+(?:won|got)\s+the\s+(?:deal|business|contract)",
    r"(?:auftrag|zuschlag)\s+(?:ist\s+|wird\s+)?(?:erteilt|vergeben)",
    r"erteilen\s+(?:ihnen\s+)?(?:den\s+)?(?:auftrag|zuschlag)",
    r"(?:vertrag|bestellung)\s+(?:ist\s+)?(?:unterschrieben|unterzeichnet|gegengezeichnet)",
    r"(?:bestellung|auftragsbestätigung|unterschriebene\w*\s+\w+)\s+(?:anbei|im\s+anhang|liegt\s+bei)",
    r"anbei\s+(?:unsere|die)\s+(?:bestellung|unterschrieben\w*)",
    r"bitte\s+(?:senden|schicken)\s+sie\s+(?:uns\s+)?(?:die|ihre)\s+rechnung",
    r"erteilen\s+(?:wir\s+)?(?:ihnen\s+)?(?:\S+\s+){0,8}?(?:den\s+)?(?:auftrag|zuschlag)",
    r"(?:bestellung|purchase\s+order|po|orden\s+de\s+compra)\b.{0,40}?(?:im\s+anhang|anbei|attached|adjunta)",
    r"(?:please\s+find\s+)?attached\s+(?:is\s+)?(?:our\s+|the\s+)?(?:po|purchase\s+order)\b",
    r"(?:hemos\s+)?emitido\s+la\s+orden\s+de\s+compra",
    r"adjunt\w*\s+(?:\S+\s+){0,3}?firmad[oa]",
    r"contrato\s+(?:ya\s+)?(?:firmado|est[aá]\s+firmado)",
    r"(?:hemos|ya\s+hemos)\s+firmado",
    r"orden\s+de\s+compra\s+(?:adjunta|n[uú]mero)",
    r"adjunt[oa]s?\s+(?:la\s+)?(?:orden\s+de\s+compra|el\s+contrato\s+firmado)",
    r"(?:les|le)\s+adjudicamos",
    r"(?:pueden|puede)\s+(?:enviar|emitir)\s+(?:la|su)\s+factura",
    r"seguimos\s+adelante\s+con\s+(?:ustedes|su\s+propuesta|el\s+pedido)",
    # The signed paper returned: "den gegengezeichneten Vertrag", "anbei ... den Vertrag zurück".
    r"(?:unterschrieben|unterzeichnet|gegengezeichnet)\w*\s+(?:\w+\s+){0,2}?(?:vertrag|auftrag|bestellung|angebot)",
    r"anbei\s+(?:erhalten\s+sie\s+)?(?:\w+\s+){0,4}?(?:vertrag|bestellung|auftrag)\w*\s+(?:\w+\s+){0,3}?zurück",
    r"(?:here(?:'s|\s+is)|attached\s+is|returning)\s+(?:the|our)\s+(?:signed|countersigned|executed)\s+(?:contract|agreement|order\s+form|quote|sow|msa)",
    r"(?:os|le|les)\s+(?:devolvemos|env[ií]o|enviamos|mando|mandamos)\s+(?:el\s+contrato|la\s+oferta)\s+firmad[oa]",
    # Implicit renewals: the customer tells us to carry on as before.
    r"(?<!not\s)(?<!n't\s)(?:go\s+ahead\s+and|please|happy\s+to|fine\s+to)\s+renew\b",
    r"renew\s+(?:it\s+|us\s+|the\s+\w+\s+)?(?:on|under)\s+the\s+same\s+terms",
    r"verlängern\s+sie\s+(?:\w+\s+){0,4}?(?:wie\s+gehabt|wie\s+bisher|zu\s+(?:den\s+)?(?:gleichen|selben|unveränderten)\s+(?:bedingungen|konditionen))",
    r"(?:bitte\s+)?(?:wie\s+gehabt|wie\s+bisher|unverändert)\s+verlängern",
    r"(?:vous\s+pouvez|veuillez|merci\s+de)\s+(?:\w+\s+)?(?:reconduire|renouveler|prolonger)",
    r"(?:pueden|puede|podéis)\s+renovar(?:lo|la)?",
    r"renov\w*\s+(?:\w+\s+){0,3}?(?:con|en)\s+las\s+mismas\s+condiciones",
    # The order placed in words, or the signed paper sent back.
    r"hiermit\s+bestellen\s+wir",
    r"bestellen\s+(?:wir\s+)?(?:hiermit\s+)?(?:gemäß|laut|entsprechend)\s+ihrem\s+angebot",
    r"(?:bon\s+de\s+commande|commande|contrat|devis|offre)\s+(?:(?!pas\b|non\b|encore\b)\w+\s+){0,2}?(?:sign[ée]e?s?|contresign[ée]e?s?)",
    r"nous\s+(?:vous\s+)?(?:passons|confirmons)\s+(?:la\s+|notre\s+)?commande",
    # "Send the invoice": only a buyer asks for one.
    r"(?:send|issue)\s+(?:us|me)\s+(?:the|your|an)\s+invoice",
    r"(?:transmettre|envoyer|adresser|faire\s+parvenir)\s+(?:la|votre)\s+facture",
    r"(?:env[ií]en(?:nos|me)?|m[aá]nden(?:nos|me)?|emitan)\s+la\s+factura",
    # Families from the seven dev sellers (issue 13): the customer's own way of closing the deal.
    r"bon\s+pour\s+accord",
    r"(?:on\s+)?recondui\w*\s+(?:[\w'’]+\s+){0,4}?aux\s+m[êe]mes\s+conditions",
    r"roll\s+(?:it|this|them)\s+over\s+(?:\w+\s+){0,4}?(?:on|under)\s+the\s+same\s+terms",
    r"anbei\s+erhalten\s+sie\s+(?:\w+\s+){0,3}?(?:vertrag|werkvertrag|rahmenvertrag|bestellung|auftrag)\w*[^.!?]{0,80}?(?:unterzeichnet|unterschrieben|gegengezeichnet)",
    r"(?:unterzeichnet|unterschrieben|gegengezeichnet)\w*[^.!?]{0,30}?\bzurück\w*",
    r"(?<!not\s)(?<!nicht\s)(?:acompte|anticipo|anzahlung|deposit|down\s+payment)\b[^.!?]{0,60}?(?:vir[ée]e?|pay[ée]e?|réglée?|überwiesen|bezahlt|paid|transferred|wired|realizad[ao]|transferid[ao]|abonad[ao])",
    r"comprobante\s+de\s+transferencia",
    r"adjunt\w*\s+(?:\w+\s+){0,2}?(?:pedido|orden)\s+de\s+compra",
    r"(?:aqu[ií]\s+(?:lo|la)\s+tienes|(?:te|os|le|les)\s+devuelvo|(?:te|os|le|les)\s+devolvemos)\b[^.!?]{0,80}?firmad[oa]",
    r"adelante\s+con\s+el\s+pedido",
    r"(?:je\s+vous\s+confirme|nous\s+vous\s+confirmons|nous\s+confirmons)\s+(?:la\s+date\s+de\s+)?l[a'’]\s*(?:installation|pose|livraison)",
    r"(?:great|happy|glad|pleased)\s+to\s+be\s+(?:going|moving)\s+ahead",
    r"auftrag\s+an\s+(?:euch|sie|ihr\w*)\s+(?:erteilt|vergeben)",
)
# A named other party: a capitalised word that is neither us nor a step of the plan.
_US = r"you|your|yours|us|sie|ihnen|ihr\w*|euch|usted|ustedes|vosotros|vuestr\w*|su|vous|votre|vos|nous|notre"
_STEP = r"phase|stage|step|q[1-4]|next|the|january|february|march|april|may|june|july|august|september|october|november|december"
_THEM = rf"(?!(?:{_US}|{_STEP})\b)(?-i:[A-Z])\w*"
LOST = _words(
    rf"(?<!not\s)(?<!n't\s)(?:go|going|gone|went|decided\s+to\s+go|move|moving|moved)\s+(?:forward\s+)?with\s+{_OTHER}(?:\s+{_VENDOR})?",
    r"(?:go|going|gone|went|ended\s+up\s+going)\s+(?:in\s+)?a\s+different\s+direction",
    rf"(?:chose|chosen|choose|selected|picked|signed\s+with|awarded\s+(?:it|the\s+\w+)\s+to)\s+{_OTHER}(?:\s+{_VENDOR})?",
    r"(?:budget|funding)\s+(?:was\s+|has\s+been\s+|got\s+)?(?:cut|frozen|pulled|slashed|cancel+ed|withdrawn|reallocated)",
    r"(?:capex|spending|budget)\s+freeze",
    r"froze\s+(?:all\s+|the\s+)?(?:capex|budget|spending)",
    r"not\s+(?:be\s+)?moving\s+forward(?!\s+with\s+(?:the\s+)?(?:other|another|competing))",
    r"(?:decided|decision)\s+(?:not\s+to|against)\s+(?:proceed|move\s+forward|go\s+ahead|pursu\w+|purchas\w+)",
    r"(?:project|initiative|rollout|pilot|purchase)\s+(?:is\s+|was\s+|has\s+been\s+)?(?:cancel+ed|shelved|on\s+hold|put\s+on\s+ice|scrapped)",
    r"(?:we(?:'ll|\s+will)\s+)?pass\s+(?:on\s+this|for\s+now)",
    r"no\s+longer\s+(?:interested|pursuing|a\s+priority)",
    r"(?:für|fuer)\s+(?:einen\s+)?(?:anderen|alternativen)\s+(?:anbieter|lieferanten|hersteller|partner)\s+entschieden",
    r"(?:an|für)\s+(?:den|einen)\s+wettbewerber",
    r"(?:mitbewerber|wettbewerber|konkurrenz)\w*\b.{0,40}?entschieden",
    r"budget\b.{0,60}?(?:gestrichen|gekürzt|eingefroren)",
    r"nicht\s+(?:mehr\s+)?weiter\s?verfolgen",
    r"(?:budget|mittel)\s+(?:wurde\w*\s+|wurden\s+)?(?:gestrichen|gekürzt|eingefroren)",
    r"(?:projekt|vorhaben)\s+(?:wurde\s+|ist\s+)?(?:gestoppt|abgesagt|auf\s+eis\s+gelegt|eingestellt|zurückgestellt)",
    r"nicht\s+weiter\s+verfolgen",
    r"(?:ihnen|euch)\s+(?:leider\s+)?(?:eine\s+)?absage",
    r"haben\s+uns\s+(?:leider\s+)?dagegen\s+entschieden",
    r"(?:decidido|decantado|optado|elegido|seleccionado|quedado|ido|iremos|vamos)\b.{0,60}?(?:otro|otra)\s+(?:proveedor|fabricante|empresa|soluci[oó]n|opci[oó]n|plataforma)",
    r"(?:con|por)\s+la\s+competencia",
    r"no\s+(?:vamos\s+a\s+)?(?:seguir|seguiremos|continuar|continuaremos)\s+(?:adelante|con\s+(?:el|este)\s+proyecto)",
    r"presupuesto\s+(?:fue\s+|ha\s+sido\s+)?(?:recortado|cancelado|congelado|eliminado)",
    r"(?:proyecto)\s+(?:fue\s+|ha\s+sido\s+)?(?:cancelado|suspendido|pospuesto)",
    r"hemos\s+decidido\s+no",
    r"(?:hemos|han)\s+descartado",
    r"(?:ha|han)\s+sido\s+descartad[oa]s?",
    # Staying with the supplier they have.
    rf"(?<!not\s)(?<!n't\s)(?:stay|staying|stick|sticking|remain|remaining)\s+with\s+(?:our|the)\s+(?:current|existing|incumbent|present)\s+{_VENDOR}",
    r"(?<!not\s)(?<!n't\s)(?:keep|keeping)\s+(?:our|the)\s+(?:current|existing)\s+(?:\w+\s+)?(?:suppliers?|vendors?|providers?|monitors?|equipment|devices?|machines?|systems?|fleet)",
    r"(?:beim|bei\s+unserem)\s+(?:bisherigen|jetzigen|aktuellen)\s+(?:anbieter|lieferanten|dienstleister|partner)\s+(?:zu\s+)?bleiben",
    r"entschieden\b[^.!?]{0,40}?(?:so|wie\s+bisher)\s+beizubehalten",
    r"(?:garder|conserver|rester\s+avec|rester\s+chez)\s+(?:notre|nos|le|les)\s+(?:prestataire|fournisseur|partenaire|loueur)s?\s+(?:actuel|habituel|historique)s?",
    r"(?:seguir|quedarnos|continuar)\s+con\s+(?:nuestro|el)\s+proveedor\s+(?:actual|de\s+siempre|habitual)",
    # Moving to a competitor they name: "we've decided to go with Korvana" (present perfect, not history).
    r"(?:we(?:'ve|\s+have)|i(?:'ve|\s+have))\s+(?:now\s+|finally\s+)?(?:decided|chosen|opted)\s+to\s+(?:go|proceed|move\s+forward)\s+with\s+(?!you\b|your\b|us\b|the\s+(?:order|proposal|quote|purchase)\b)(?-i:[A-Z])\w*",
    r"(?:avons|a)\s+(?:choisi|retenu|opté\s+pour)\s+(?:un\s+autre|une\s+autre|la\s+concurrence|un\s+concurrent)",
    # Holding off with no date.
    r"(?<!not\s)(?<!n't\s)(?:put|putting|place|placed|placing)\s+(?:(?!not\b)\w+\s+){0,4}?on\s+hold",
    r"(?:postpone[ds]?|postponing|defer(?:red|ring)?|push(?:ed)?\s+back)\s+(?:[\w-]+\s+){0,4}?(?:indefinitely|until\s+further\s+notice|with\s+no\s+(?:new\s+)?date)",
    r"(?:legen|liegt|gelegt)\s+(?:(?!nicht\b)\w+\s+){0,4}?auf\s+eis",
    r"bis\s+auf\s+weiteres\s+(?:ausgesetzt|zurückgestellt|verschoben|gestoppt)",
    r"(?:report[ée]e?|suspendue?|mise?\s+en\s+attente)\s+(?:sine\s+die|jusqu'à\s+nouvel\s+ordre|(?:pour\s+une\s+durée\s+)?indéterminée)",
    r"(?:pospuesto|aplazado|suspendido)\s+(?:indefinidamente|hasta\s+nuevo\s+aviso|sin\s+fecha)",
    # A tender lost: the buyer's notice to an unsuccessful bidder.
    r"relative\s+advantages\s+of\s+the\s+successful\s+(?:tender|bid|tenderer|bidder)",
    r"(?:your|our)\s+(?:tender|bid|offer)\s+(?:was|has\s+been)\s+(?:ranked\s+(?:second|third|fourth|\d)|unsuccessful|not\s+successful)",
    r"(?:ihr|unser)\s+angebot\s+(?:kann|konnte|wird)\s+(?:leider\s+)?nicht\s+berücksichtigt",
    r"zuschlag\b[^.!?]{0,60}?auf\s+das\s+angebot\s+(?:der|des)\s+(?:firma|bieters)",
    r"(?:votre|notre)\s+offre\s+n'a\s+pas\s+été\s+retenue",
    r"(?:marché|contrat|lot)\s+a\s+été\s+attribué\s+à\s+(?!votre\b|vous\b)\w+",
    r"(?:su|vuestra)\s+oferta\s+no\s+(?:ha\s+)?(?:resultado|sido)\s+(?:adjudicataria|seleccionada)",
    # Someone else's bundle makes our offer unnecessary.
    r"(?:thrown|threw|included|bundled|rolled)\s+(?:[\w-]+\s+){0,8}?into\s+(?:the|their|our)\s+(?:[\w-]+\s+){0,3}?(?:renewal|contract|deal|lease)",
    r"(?:beschaffung|anschaffung|kauf|bestellung)\s+(?:\w+\s+){0,3}?erledigt",
    r"nicht\s+(?:mehr\s+)?gesondert\s+beschaffen",
    r"(?:brauchen|benötigen)\s+wir\s+(?:\w+\s+){0,2}?keine\s+(?:\w+\s+){0,2}?(?:geräte|pumpen|systeme|maschinen)\s+mehr",
    r"proposition\s+group[ée]e",
    r"(?:ne\s+pas|ne\s+pouvons\s+pas|ne\s+donnerons\s+pas)\s+donner\s+suite|ne\s+donnerons\s+pas\s+suite",
    # Families from the seven dev sellers (issue 13): a deal lost, said the customer's way. A named
    # winner is a capitalised word that is not us ("you", "Sie", "ustedes", "vous") nor a plan's step.
    # ... the business went to someone else (named, or a tender awarded elsewhere):
    rf"(?:decided|chosen|opted)\s+to\s+(?:move|switch)\s+(?:over\s+)?to\s+{_THEM}",
    rf"(?:intends?|intention|intent|intend)\s+to\s+award\s+(?:\w+\s+){{0,8}}?to\s+{_THEM}",
    rf"(?:contract|tender|lot|business|order)\s+(?:has\s+been\s+|was\s+|will\s+be\s+)?awarded\s+to\s+{_THEM}",
    rf"(?:auftrag|zuschlag)\s+(?:\w+\s+){{0,12}}?an\s+(?:die\s+|den\s+|das\s+)?{_THEM}[^.!?]{{0,80}}?(?:vergeben|erteilt)",
    r"(?:liegt|liegen)\s+auf\s+rang\s+[2-9]",
    rf"(?:a|avons|ont)\s+retenu\s+(?:la\s+proposition|l['’]offre|le\s+devis)\s+(?:de\s+|d['’])\s*{_THEM}",
    r"(?:votre|notre)\s+offre\b[^.!?]{0,80}?n['’]a\s+pas\s+été\s+retenue",
    rf"(?:marché|contrat|lot)\s+(?:\w+\s+){{0,3}}?(?:est|a\s+été)\s+attribué\s+à\s+(?:la\s+société\s+|l['’]entreprise\s+)?{_THEM}",
    r"class[ée]e?\s+en\s+(?:[2-9]\s*(?:e|ème)|deuxième|troisième|quatrième)\s+position",
    rf"(?<!vous\s)(?<!nous\s)confi(?:er|ons|é)\s+(?:[\w'’]+\s+){{0,10}}?à\s+{_THEM}",
    r"ne\s+donner\w*\s+(?:\w+\s+)?pas\s+suite",
    rf"se\s+adjudic\w*\s+(?:\w+\s+){{0,20}}?a\s+(?:la\s+(?:empresa|mercantil)\s+|el\s+|los\s+)?{_THEM}",
    r"(?:segund|tercer|cuart)[ao]\s+clasificad[ao]",
    rf"(?:ha|han|hemos)\s+optado\s+por\s+(?:\w+\s+){{0,3}}?de\s+{_THEM}",
    rf"hacer\s+el\s+pedido\s+(?:\w+\s+){{0,4}}?a\s+{_THEM}",
    r"(?:he|hemos)\s+comprado\s+(?:\w+\s+){0,4}?a\s+(?:otro|otra|un|una)\b",
    # ... they stay with what they have:
    r"bleiben\s+(?:\w+\s+){0,2}?bei\s+unser\w*\s+(?:\w+\s+)?(?:lieferant|anbieter|installateur|dienstleister|partner|händler|techniker|hersteller)\w*",
    r"(?:weiter|wieder|weiterhin)\s+(?:\w+\s+){0,2}?(?:über|bei)\s+unser\w*\s+(?:langjährigen|bisherigen|bewährten|jetzigen|aktuellen)\s+(?:partner|lieferanten|anbieter|dienstleister|installateur)",
    r"garder\s+not(?:re|s)\s+(?:\w+\s+){0,2}?actuel\w*",
    rf"(?:preferido|decidido|optado\s+por)\s+seguir\s+con\s+{_THEM}",
    # ... the project is frozen or on hold, with no date:
    r"holding\s+off\s+on\s+(?:[\w-]+\s+){1,4}?(?:for\s+now|indefinitely|for\s+the\s+time\s+being)",
    r"(?:has|have|had)\s+(?:now\s+)?(?:frozen|froze)\s+(?:all\s+)?(?:new\s+|non-essential\s+)?(?:\w+\s+){0,2}?(?:projects|investments|capex|spending|purchases)",
    r"(?:isn't|is\s+not|won't\s+be)\s+going\s+to\s+happen\s+(?:this\s+(?:financial\s+|fiscal\s+)?year|any\s?more|at\s+all)",
    r"auf\s+eis\s+gelegt",
    r"(?:damit|für\s+dieses\s+\w+|vorerst)\s+(?:\w+\s+){0,3}?vom\s+tisch",
    r"(?:pilot|projekt|vorhaben|workshop)\s+(?:\w+\s+){0,2}?absagen",
    r"en\s+suspenso",
    r"congelad[oa]s?\s+(?:\w+\s+){0,2}?inversiones",
    r"gel\w*\s+(?:des|les|tous\s+les)\s+investissements",
    # ... the budget went elsewhere (not merely to a later quarter):
    r"(?:money|budget|capital|funds?|funding)\s+(?:\w+\s+){0,6}?(?:has\s+been|was|have\s+been)\s+(?:moved|reallocated|redirected|diverted|reassigned)(?!\s+(?:to|into)\s+(?:q[1-4]|the\s+next|next)\b)",
    r"(?:budget|mittel)\b[^.!?]{0,60}?umgeschichtet",
    r"budget\s+(?:\w+\s+){0,2}?(?:ist|sind)\s+in\s+[^.!?]{0,40}?geflossen",
    r"presupuesto\s+(?:\w+\s+){0,4}?(?:destinado|reasignado|desviado)\s+a",
    r"budget\s+(?:\w+\s+){0,4}?(?:réaffecté|réalloué|basculé)",
    # ... another vendor's package makes ours unnecessary:
    r"no\s+(?:longer\s+)?need\s+for\s+(?:a\s+)?separate\s+(?:\w+\s+)?(?:service|maintenance|support|plan|contract|system|solution|machine|scanners?|module|licen[cs]es?|package|wms|equipment)",
    r"separate\s+(?:[\w-]+\s+){1,3}?no\s+longer\s+makes\s+sense",
    r"bedarf\s+(?:ist\s+)?(?:damit\s+)?(?:erst\s+mal|vorerst|bereits|schon)\s+gedeckt",
    r"ne\s+se\s+justifie\s+plus",
    r"n['’]achèterons\s+(?:donc\s+)?pas",
    r"ya\s+no\s+(?:hace|nos\s+hace)\s+falta",
    # ... or they go another way:
    r"(?:tomar|tomado|ir\s+en)\s+otra\s+direcci[oó]n",
    r"partir\s+dans\s+une\s+autre\s+direction",
    r"(?:gehen|geht)\s+(?:wir\s+)?(?:\w+\s+){0,2}?einen\s+anderen\s+weg",
)
# Our rep acknowledging the customer's decision: won evidence even though we wrote it.
WON_ACK = _words(
    r"thank(?:s|\s+you)\s+(?:so\s+much\s+|very\s+much\s+)?for\s+(?:the|your)\s+(?:order|purchase\s+order|po|business|signature)",
    r"(?:danke|dank)\s+für\s+(?:den|ihren|diesen|die)\s+(?:auftrag|bestellung)",
    r"gracias\s+por\s+(?:el|su|vuestro|vuestra|la)\s+(?:pedido|orden\s+de\s+compra|confianza)",
    r"copia\s+contrafirmada",
    # Receipt of the signed contract or the order, acknowledged by our rep.
    r"(?:received|got)\s+(?:the|your)\s+(?:signed|countersigned|executed)\s+(?:contract|agreement|order\s+form|copy|quote)",
    r"(?:received|got)\s+(?:the|your)\s+(?:po|purchase\s+order)\b",
    r"(?:signed|countersigned)\s+(?:contract|agreement|order\s+form|copy)\s+(?:has\s+)?(?:arrived|came\s+in|is\s+in)",
    r"(?:vertrag|bestellung|auftrag)\s+ist\s+(?:heute\s+|gut\s+)?(?:bei\s+uns\s+)?(?:angekommen|eingegangen)",
    r"(?:unterschriebene|unterzeichnete|gegengezeichnete)\w*\s+(?:vertrag|bestellung|auftrag)\w*\s+(?:ist\s+)?(?:bei\s+uns\s+)?(?:angekommen|eingegangen)",
    r"(?:hemos\s+recibido|ya\s+tenemos|nos\s+(?:ha|han)\s+llegado)\s+(?:el\s+contrato\s+firmado|la\s+orden\s+de\s+compra|el\s+pedido|la\s+oc)\b",
)
STAGES: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("demo", _words(
        r"demo\s+(?:is\s+|has\s+been\s+)?(?:booked|scheduled|confirmed|set)", r"(?:book|booked|schedule|scheduled|confirm|confirmed)\s+(?:a|the|our)\s+(?:demo|walkthrough)",
        r"(?:see|looking\s+forward\s+to)\s+(?:you\s+at\s+)?the\s+demo", r"(?:vorführung|demo|präsentation)\s*(?:termin)?\s+(?:ist\s+)?(?:bestätigt|vereinbart|gebucht)",
        r"termin\s+für\s+(?:die|eine)\s+(?:vorführung|demo|präsentation)", r"(?:demo|demostraci[oó]n)\s+(?:est[aá]\s+)?(?:confirmada|agendada|programada)",
        r"testzugang", r"acceso\s+de\s+prueba",
    )),
    ("proposal", _words(
        r"(?:attached|here)\s+(?:is|are|you'll\s+find)\s+(?:our|the)\s+(?:\w+\s+)?(?:proposal|quote|quotation|offer)",
        r"(?:proposal|quote|quotation)\s+(?:is\s+)?attached", r"(?:sending|sent)\s+(?:you\s+)?(?:our|the)\s+(?:\w+\s+)?(?:proposal|quote|quotation)",
        r"(?:angebot|kostenvoranschlag)\s+(?:\w+\s+)?(?:anbei|im\s+anhang|beigefügt)", r"anbei\s+(?:unser|das)\s+(?:\w+\s+)?angebot",
        r"adjunt[oa]\s+(?:la\s+|nuestra\s+)?(?:propuesta|cotizaci[oó]n|oferta|presupuesto)", r"(?:le|les)\s+(?:env[ií]o|enviamos)\s+(?:la|nuestra)\s+(?:propuesta|cotizaci[oó]n)",
        r"(?:please\s+)?find\s+attached\s+(?:our|the|my)\s+(?:\w+\s+){0,2}?(?:proposal|quote|quotation|offer|estimate)",
        r"anbei\s+(?:\w+\s+){0,3}?(?:unser|das|ihr)\w*\s+(?:\w+\s+)?(?:angebot|kostenvoranschlag)",
        r"(?:erhalten|senden|schicken)\s+(?:sie|ihnen|wir\s+ihnen)\s+(?:\w+\s+){0,3}?(?:unser|das)\w*\s+(?:\w+\s+)?angebot",
        r"(?:te|os|le|les)\s+(?:adjunto|adjuntamos|env[ií]o|enviamos|mando|paso)\s+(?:la|el|nuestra|nuestro)\s+(?:\w+\s+){0,2}?(?:propuesta|cotizaci[oó]n|oferta|presupuesto)",
        r"va\s+adjunt[oa]\s+(?:la|el|nuestra|nuestro)\s+(?:\w+\s+){0,2}?(?:propuesta|cotizaci[oó]n|oferta|presupuesto)",
    )),
    ("negotiation", _words(
        r"redlines?", r"red-?lined", r"(?:discount|terms|payment\s+terms|pricing)\s+(?:request|proposal|counter)", r"counter-?offer",
        r"negotiat\w+", r"(?:legal|procurement)\s+(?:review|is\s+reviewing|comments)", r"(?:verhandlung|nachverhandl)\w*", r"rabatt\w*",
        r"(?:vertragsentwurf|änderungswünsche)", r"negociaci[oó]n", r"descuento", r"(?:condiciones|t[eé]rminos)\s+de\s+pago",
        r"(?:projekt|preis)?nachlass\w*", r"gegenangebot", r"contra(?:propuesta|oferta)", r"counter-?proposal",
        r"(?:payment\s+terms?|zahlungsziel|plazo\s+de\s+pago)\b[^.!?]{0,40}?(?:instead\s+of|rather\s+than|statt|anstatt|en\s+(?:lugar|vez)\s+de)",
        r"(?:legal|procurement|our\s+lawyers?)\s+(?:team\s+)?(?:is|are)\s+(?:reviewing|going\s+through|looking\s+at)\s+(?:the|your)\s+(?:contract|agreement|msa|terms)",
        r"(?:rechtsabteilung|einkauf|juristen)\s+(?:prüf|sieht|schaut|geht)\w*\s+(?:\w+\s+){0,3}?(?:vertrag|vertragsentwurf|bedingungen)",
        r"(?:asesor[ií]a\s+jur[ií]dica|departamento\s+legal|jur[ií]dico|compras)\s+(?:est[aá]\s+)?revis\w*\s+(?:el\s+)?(?:contrato|borrador|condiciones)",
    )),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Hit:
    kind: str  # intent | request | selling | won | lost | demo | proposal | negotiation
    sentence: str
    learned: bool = False  # read by the classifier (nlp/intent.py), not by a phrase rule


_KINDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("won", WON), ("lost", LOST), ("won_ack", WON_ACK), *STAGES, ("request", REQUEST), ("selling", SELLING), ("intent", INTENT),
)  # fmt: skip


# A negation shortly before an outcome phrase turns it around ("NO hemos elegido a otro proveedor",
# "we won't roll it over"); a question or an "if" only imagines it ("when is the deposit due?").
_NEGATED = re.compile(
    r"(?:(?<!\w)(?:no|not|ne|nicht|nie|kein\w*|pas|nunca|never|jamais)|n['’]t)\W+(?:[\w'’]+\W+){0,2}$",
    re.IGNORECASE,
)
_HYPOTHETICAL = re.compile(r"(?<!\w)(?:if|falls|sofern|wenn)(?!\w)", re.IGNORECASE)
# ... but "could you send the invoice?" is a request politely asked, not a question about it.
_POLITE = re.compile(
    r"(?<!\w)(?:(?:could|can|would|will)\s+you|(?:könnten|können|würden)\s+sie|(?:pourriez|pouvez)[- ]vous"
    r"|podr[ií]an?|pueden|puede\s+usted|podéis)(?!\w)",
    re.IGNORECASE,
)
_OUTCOMES = frozenset({"won", "lost"})


def imagined(sentence: str, start: int | None = None) -> bool:
    """An outcome that is negated (just before `start`, where the phrase begins), asked about or
    supposed, not stated."""
    return bool(
        (start is not None and _NEGATED.search(sentence[:start]))
        or (sentence.rstrip().endswith("?") and not _POLITE.search(sentence))
        or _HYPOTHETICAL.search(sentence)
    )


_FOUND_CACHE = 4096  # texts; a thread re-reads its earlier messages on every arrival
_PROBES = Probes([pattern for _, pattern in _KINDS])
_SENTENCE_CACHE = 16384  # sentences: greetings, closings and signature lines come back in every mail


def find_signals(text: str) -> list[Hit]:
    """Every signal in `text`, each with the sentence that carries it; a sentence counts once per kind."""
    return list(_find_signals(text))


def forget() -> None:
    """Drop the cached readings (a benchmark times cold reading)."""
    for cached in (_find_signals, _kinds_of, says_another_deal):
        cached.cache_clear()
    for module in (clean, probes, money, support):
        module.forget()


@functools.lru_cache(maxsize=_SENTENCE_CACHE)
def _kinds_of(sentence: str) -> tuple[tuple[str, re.Pattern[str]], ...]:
    """The kinds whose case-sensitive probe matches the sentence lower-cased, a superset of those whose
    pattern matches it (nlp/probes.py); every kind where lower-casing is not that simple."""
    low = sentence.lower()
    if len(low) != len(sentence) or UNUSUAL_CASE.search(low):
        return _KINDS
    return tuple(kind for kind, probe in zip(_KINDS, _PROBES.probes, strict=True) if probe.search(low))


@functools.lru_cache(maxsize=_FOUND_CACHE)
def _find_signals(text: str) -> tuple[Hit, ...]:
    hits = []
    for sentence in sentences(text):
        for kind, pattern in _kinds_of(sentence):  # most sentences: none, or intent alone
            found = pattern.search(sentence)
            if found is None or (kind in _OUTCOMES and imagined(sentence, found.start())):
                continue
            hits.append(Hit(kind, sentence[:400]))
    return tuple(hits)


# --- two-step and non-text evidence ------------------------------------------------------------------

# A demo named (offered, asked for, planned) ...
DEMO = _words(
    r"(?:live\s+)?demo(?:nstration)?s?", r"walk-?through", r"vorführung\w*", r"demostraci[oó]n(?:es)?"
)
# ... and the customer then agreeing to a date: the demo is booked even if no sentence says "booked".
CONFIRM = _words(
    r"(?:works|suits)\s+(?:for\s+(?:me|us)|fine|great|well|perfectly)",
    r"(?:monday|tuesday|wednesday|thursday|friday|\d{1,2}(?::\d\d)?\s*(?:am|pm)?)\b[^.!?]{0,25}?\b(?:works|is\s+fine|suits\s+us)",
    r"(?:see|meet)\s+you\s+(?:then|there|on\s+\w+)",
    r"(?:date|time|slot)\s+(?:is\s+)?confirmed",
    r"(?:termin|datum|uhrzeit)\s+(?:ist\s+)?(?:bestätigt|notiert|eingetragen|fix)",
    r"(?:ich|wir)\s+bestätige\w*\s+(?:den|die|das|ihnen)",
    r"(?:passt|klappt)\s+(?:uns|mir|bei\s+uns)\b",
    r"confirmad[oa]s?\b",
    r"(?:nos|me)\s+(?:va|viene)\s+(?:bien|perfecto)",
    r"all[ií]\s+estaremos",
    r"de\s+acuerdo\s+con\s+la\s+fecha",
)


# Our rep chasing an answer: a thread that ends with one of these and stays silent is going cold.
FOLLOW_UP = _words(
    r"(?:just\s+)?(?:following|checking)\s+(?:up|in|back)\b",
    r"follow(?:ing)?[\s-]up\s+on",
    r"(?:a\s+)?(?:quick|gentle|friendly)\s+(?:follow[\s-]?up|reminder|nudge)",
    r"any\s+(?:update|news|thoughts|feedback)",
    r"(?:did|have)\s+you\s+(?:have\s+)?(?:had\s+)?(?:a\s+)?(?:chance|time)\s+to",
    r"wanted\s+to\s+(?:check|see|circle\s+back|touch\s+base)",
    r"circl(?:e|ing)\s+back",
    r"bump(?:ing)?\s+this",
    r"nachhaken",
    r"nachfassen",
    r"(?:melde|meldete)\s+mich\s+(?:noch\s+)?(?:einmal|mal|nochmal)",
    r"(?:wollte|möchte)\s+(?:kurz\s+)?nachfragen",
    r"(?:gibt\s+es|haben\s+sie)\s+(?:schon\s+)?(?:neuigkeiten|eine\s+rückmeldung)",
    r"(?:schon\s+)?(?:gelegenheit|zeit)\s+(?:gehabt|gefunden)",
    r"(?:konnten|könnten)\s+sie\s+(?:\w+\s+){0,4}?(?:schon\s+)?(?:prüfen|besprechen|anschauen|durchsehen)",
    r"(?:alguna\s+)?novedad(?:es)?",
    r"(?:hab[eé]is|han|ha)\s+podido\s+revisar",
    r"retomo\s+(?:este|el)\s+(?:hilo|tema|correo)",
    r"(?:te|os|le|les)\s+escribo\s+(?:de\s+nuevo|otra\s+vez)",
    r"(?:hacer|hago)\s+seguimiento",
    r"quer[ií]a\s+saber\s+si",
)
# A customer (or our rep) saying the thread is a further, separate matter at an account we already
# serve: "different topic", "a second warehouse", "ein separates Angebot", "otra nave", "nada que ver con
# el atomizador", or that what we delivered runs well (that deal is done). It keeps the thread off an
# open deal of the account that the thread does not name (nlp/link.py).
_SITE = r"(?:site|warehouse|plant|factory|line|location|depot|building|branch|store|lab(?:oratory)?)s?"
ANOTHER_DEAL = _words(
    r"(?:different|another|next|separate)\s+(?:topic|subject|matter|project|requirement)",
    rf"(?:a\s+|our\s+)?(?:second|third|another|additional|new|separate)\s+(?:\w+\s+)?{_SITE}",
    r"(?:a\s+)?separate\s+(?:quote|quotation|proposal|offer|order)",
    r"(?:nächste|andere|weitere)s?\s+(?:thema|projekt|vorhaben|anliegen)",
    r"(?:zweite|dritte|weitere|neue|zusätzliche)[sn]?\s+(?:\w+\s+)?(?:lager|werk|standort|halle|filiale|niederlassung|gebäude|labor|linie)\w*",
    r"(?:separate|gesonderte|eigene|zusätzliche)[sn]?\s+angebot",
    r"autre\s+(?:sujet|projet|besoin)",
    r"(?:autre|nouveau|nouvel|nouvelle|second|seconde|deuxième)\s+(?:site|entrepôt|usine|atelier|laboratoire|bâtiment|ligne|magasin)",
    r"(?:devis|offre)\s+(?:séparée?|à\s+part|distincte?)",
    r"(?:otro|distinto)\s+(?:tema|asunto|proyecto)",
    r"(?:segund[oa]|tercer[oa]?|otr[oa]|nuev[oa])\s+(?:planta|nave|f[aá]brica|l[ií]nea|almac[eé]n|sede|centro|laboratorio|tienda|delegaci[oó]n)",
    r"(?:presupuesto|oferta|propuesta)\s+(?:aparte|separad[oa]|independiente)",
    # ... "nothing to do with the sprayer": the customer setting the open deal aside,
    r"(?:nothing|not)\s+(?:\w+\s+)?to\s+do\s+with",
    r"hat\s+(?:\w+\s+){0,3}?nichts\s+(?:\w+\s+){0,3}?zu\s+tun",
    r"rien\s+à\s+voir\s+avec",
    r"nada\s+que\s+ver\s+con",
    # ... or what we delivered is running well, and now they want something else.
    r"(?:has|have)\s+settled\s+in",
    r"(?:are|is)\s+(?:in\s+and\s+)?(?:working|running|performing)\s+(?:really\s+|very\s+)?(?:well|nicely|smoothly|great|fine)",
    r"(?:läuft|laufen)\s+(?:\w+\s+){0,6}?(?:tadellos|einwandfrei|bestens|problemlos|(?:sehr\s+)?(?:gut|ordentlich|zuverlässig))",
    r"(?:fonctionne|fonctionnent|tourne|tournent)\s+(?:\w+\s+)?(?:parfaitement|très\s+bien|à\s+merveille|sans\s+souci)",
    r"(?:va|van|funciona|funcionan)\s+(?:\w+\s+)?(?:de\s+maravilla|perfectamente|muy\s+bien|genial)",
    r"a\s+pleno\s+rendimiento",
)
_ANOTHER_PROBE = Probes([ANOTHER_DEAL])


@functools.lru_cache(maxsize=_FOUND_CACHE)
def says_another_deal(text: str) -> bool:
    """ANOTHER_DEAL in `text`; the case-sensitive probe on lower-cased text first (a third of the cost
    of the case-insensitive search, which then runs only where the probe finds something)."""
    return _ANOTHER_PROBE.can_match([text])[0] and ANOTHER_DEAL.search(text) is not None


# Someone saying they changed company or address.
MOVED = _words(
    r"i(?:'ve|\s+have)?\s+(?:just\s+|recently\s+)?(?:moved|switched)\s+(?:over\s+)?to\b",
    r"i(?:'ve|\s+have)?\s+(?:just\s+|recently\s+)?joined\b(?!\s+(?:the|this|our|your)\s+(?:call|meeting|webinar|session))", r"(?:my|this\s+is\s+my)\s+new\s+(?:e-?mail\s+)?address",
    r"new\s+(?:company|employer|role|position|job)\b", r"no\s+longer\s+(?:with|at|working\s+(?:at|for))\b", r"(?:i(?:'ve|\s+have)|i'm|i\s+am)\s+(?:left|leaving)\b",
    r"(?:meine\s+)?neue\w*\s+(?:e-?mail-?)?adresse", r"nicht\s+mehr\s+(?:bei|für)\b", r"(?:bin|arbeite)\s+(?:ich\s+)?(?:jetzt|nun|seit\s+\w+(?:\s+\w+){0,2})\s+bei\b",
    r"(?:seit|ab)\s+(?:dem\s+)?\d{1,2}\.\s*\w+\s+(?:bin|arbeite)\s+ich\b", r"(?:gewechselt|wechsle)\s+(?:zu|zur|zum|nach)\b", r"neue\w*\s+(?:arbeitgeber|firma|stelle|aufgabe)\b",
    r"(?:mi|nuestra)\s+nueva\s+(?:direcci[oó]n|cuenta|empresa)", r"nuevo\s+(?:correo|e-?mail)", r"(?:me\s+he\s+incorporado|me\s+incorporo|ahora\s+trabajo|ya\s+no\s+(?:estoy|trabajo))\b",
    r"he\s+cambiado\s+de\s+(?:empresa|trabajo)",
)  # fmt: skip

_STEM = re.compile(r"\.[a-z0-9]{2,5}$", re.IGNORECASE)
_IMAGE = re.compile(r"\.(?:png|jpe?g|gif|bmp|heic|webp|svg|tiff?)$", re.IGNORECASE)
_TOKENS = re.compile(r"[^\W_]+", re.UNICODE)
_QUOTE_DOC = frozenset({"quote", "quotation", "proposal", "offer", "estimate", "angebot", "kostenvoranschlag",
                        "cotizacion", "cotización", "presupuesto", "propuesta", "oferta", "orderform", "bestellformular"})  # fmt: skip
_PO_DOC = frozenset(
    {"po", "purchaseorder", "bestellung", "auftrag", "ordendecompra", "oc", "pedido", "bdc", "bondecommande"}
)
_CONTRACT_DOC = frozenset(
    {"contract", "agreement", "msa", "sow", "vertrag", "rahmenvertrag", "contrato", "acuerdo", "contrat"}
)
_SIGNED_DOC = frozenset({"signed", "countersigned", "executed", "unterschrieben", "unterzeichnet", "gegengezeichnet",
                         "signiert", "firmado", "firmada", "contrafirmado", "signe", "signé", "contresigne", "contresigné"})  # fmt: skip
_RFP_DOC = frozenset({"rfp", "rfq", "tender", "ausschreibung", "licitacion", "licitación", "pliego"})
_ORDER_CONFIRMED = frozenset(
    {"auftragsbestätigung", "auftragsbestaetigung", "orderconfirmation", "confirmaciondepedido"}
)
_PAIRS = (("purchase", "order"), ("order", "form"), ("order", "confirmation"), ("orden", "compra"))


def _doc_words(filename: str) -> set[str]:
    """The words of a file name, with the usual two-word names joined: PO-4471.pdf -> {po, 4471}."""
    words = [w.lower() for w in _TOKENS.findall(_STEM.sub("", filename))]
    joined = {a + b for a, b in _PAIRS for i in range(len(words) - 1) if words[i] == a and words[i + 1] == b}
    if "orden" in words and "compra" in words:
        joined.add("ordendecompra")
    if "bon" in words and "commande" in words:
        joined.add("bondecommande")
    if "pedido" in words and {"confirmación", "confirmacion"} & set(words):
        joined.add("confirmaciondepedido")
    return set(words) | joined


def attachment_signals(filenames: tuple[str, ...], *, outside: bool) -> list[Hit]:
    """What attached documents say, by name: our quote is a proposal, a supplier's quote is selling,
    the customer's PO or signed contract is won, a contract draft or redlines is negotiation."""
    hits = []
    for name in filenames:
        if _IMAGE.search(name):
            continue
        words = _doc_words(name)
        quote = f"attachment: {name}"
        if words & _CONTRACT_DOC and words & _SIGNED_DOC:
            hits.append(Hit("won" if outside else "negotiation", quote))
        elif words & _ORDER_CONFIRMED:
            hits.append(Hit("selling" if outside else "won_ack", quote))
        elif words & _PO_DOC and outside:
            hits.append(Hit("won", quote))
        elif words & _CONTRACT_DOC or "redlines" in words or "redline" in words:
            hits.append(Hit("negotiation", quote))
        elif words & _QUOTE_DOC:
            hits.append(Hit("selling" if outside else "proposal", quote))
        elif words & _RFP_DOC and outside:
            hits.append(Hit("request", quote))
    return hits


_INVITE_PREFIX = re.compile(
    r"^\s*(?:(?:updated\s+)?invitation|einladung|aktualisierte\s+einladung|invitaci[oó]n|invitaci[oó]n\s+actualizada|"
    r"accepted|akzeptiert|zugesagt|aceptad[oa])\s*:\s*",
    re.IGNORECASE,
)
_WHEN = re.compile(r"\s+@\s+.*$")
_MEETING_NEGOTIATION = _words(
    r"contract\w*", r"negotiat\w+", r"redlines?", r"(?:commercial|pricing|payment)\s+terms", r"vertrag\w*", r"verhandlung\w*",
    r"konditionen", r"contrato\w*", r"negociaci[oó]n", r"condiciones",
)  # fmt: skip


def meeting_signals(subject: str, text: str) -> list[Hit]:
    """A calendar invite's stage: a demo when its title or text names one, negotiation when it is about
    the contract or terms; any other meeting is no stage on its own."""
    title = _WHEN.sub("", subject).strip()
    summary = _INVITE_PREFIX.sub("", title).strip() or title
    quote = f"calendar invite: {summary}"[:400]
    if DEMO.search(title) or DEMO.search(text[:2000]):
        return [Hit("demo", quote)]
    if _MEETING_NEGOTIATION.search(title):
        return [Hit("negotiation", quote)]
    return []
