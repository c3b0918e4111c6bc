// Grants one role to a principal on an existing Azure AI Foundry project.
// Deployed by main.bicep at the project's resource group (which may be in another
// subscription), so the role assignment can be scoped to the project itself.

@description('Name of the Foundry (Microsoft.CognitiveServices) account that holds the project.')
param accountName string

@description('Name of the Foundry project.')
param projectName string

@description('Object (principal) id of the identity that gets the role.')
param principalId string

@description('Role definition GUID to assign.')
param roleDefinitionGuid string

resource account 'Microsoft.CognitiveServices/accounts@2025-06-01' existing = {
  name: accountName
}

resource project 'Microsoft.CognitiveServices/accounts/projects@2025-06-01' existing = {
  parent: account
  name: projectName
}

resource projectRole 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(project.id, principalId, roleDefinitionGuid)
  scope: project
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionGuid)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

output roleAssignmentId string = projectRole.id
